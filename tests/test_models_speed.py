"""rag.models.speed: measuring how fast a model reads prompts, keeping it, and the context budget."""

from __future__ import annotations

from rag.models import speed
from rag.settings import AnswerSettings
from rag.testing import fake_loaded_model


def test_speed_is_measured_once_and_kept_on_disk_for_the_next_process(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "CACHE_FILE", tmp_path / "prompt-speed.json")
    first = fake_loaded_model(8192, 128, prompt_tokens_per_s=5000)
    first.identity = "llamacpp|/models/a.gguf|123:456|8192"
    measured = speed.prompt_speed(first)
    probes = len(first.chat_model.calls)
    assert probes >= 2 and 2500 < measured.tokens_per_s < 10000
    assert speed.prompt_speed(first) is measured and len(first.chat_model.calls) == probes  # kept

    # a new process loads the same model: the figure is read, not measured again
    again = fake_loaded_model(8192, 128, prompt_tokens_per_s=5000)
    again.identity = first.identity
    assert speed.prompt_speed(again) == measured and again.chat_model.calls == []
    # another model (or other threads, another machine) is measured on its own
    other = fake_loaded_model(8192, 128, prompt_tokens_per_s=5000)
    other.identity = first.identity.replace("a.gguf", "b.gguf")
    speed.prompt_speed(other)
    assert other.chat_model.calls


def test_probes_do_not_hit_a_prompt_cache():
    model = fake_loaded_model(8192, 128, prompt_tokens_per_s=50000)
    speed.measure_prompt_speed(model)
    prompts = [c.user_text for c in model.chat_model.calls]
    starts = [p[:14] for p in prompts]
    assert len(set(starts)) == len(starts)  # each probe begins differently


def test_context_budget_settings():
    fast = fake_loaded_model(16384, 512)  # reads instantly
    assert speed.context_budget_tokens(AnswerSettings(context_budget="window"), fast) is None
    assert speed.context_budget_tokens(AnswerSettings(context_budget="auto"), fast) is None  # the window fits
    assert speed.context_budget_tokens(AnswerSettings(context_budget=3000), fast) == 3000
    assert speed.context_budget_tokens(AnswerSettings(context_budget=90000), fast) is None
    slow = fake_loaded_model(16384, 512)
    slow.prompt_speed = speed.PromptSpeed(tokens_per_s=100.0, overhead_s=1.0, probe_tokens=300)
    assert speed.context_budget_tokens(AnswerSettings(first_token_s=10), slow) == 900
    assert speed.context_budget_tokens(AnswerSettings(first_token_s=2), slow) == speed.MIN_BUDGET_TOKENS


def test_real_answers_correct_the_kept_speed(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "CACHE_FILE", tmp_path / "prompt-speed.json")
    model = fake_loaded_model(8192, 128)
    model.identity = "fake|x"
    model.prompt_speed = speed.PromptSpeed(tokens_per_s=1000.0, overhead_s=0.0, probe_tokens=500)
    speed.observe(model, 2000, 4.0)  # 500 tokens/s in a real answer
    assert model.prompt_speed.tokens_per_s == 750.0
    speed.observe(model, 100, 10.0)  # too short to say anything
    assert model.prompt_speed.tokens_per_s == 750.0
    assert speed._read_cache()["fake|x"]["tokens_per_s"] == 750.0  # kept for the next process


def test_an_optimistic_figure_is_corrected_by_the_next_answers(tmp_path):
    """The QA chain reports each answer's time to first token; a budget that was too generous
    shrinks towards what the model really reads in the wait."""
    from tests.helpers_rag import long_chinese_text, make_kb

    model = fake_loaded_model(16384, 128, prompt_tokens_per_s=8000)
    model.prompt_speed = speed.PromptSpeed(tokens_per_s=200000.0, overhead_s=0.0, probe_tokens=500)
    kb = make_kb(tmp_path, model=model, docs={"a.txt": long_chinese_text(45, seed=1)},
                 settings=None)
    kb.settings = kb.settings.model_copy(update={"answer": kb.settings.answer.model_copy(update={"first_token_s": 0.1})})
    first = kb.ask("第十二节讨论的工作投入了多少资金？", k=2)
    assert first["context_budget"] is None  # believed fast: the whole window
    for _ in range(5):
        later = kb.ask("第十二节讨论的工作投入了多少资金？", k=2)
    assert later["context_budget"] is not None and later["prompt_tokens"] < first["prompt_tokens"] / 2
    assert model.prompt_speed.tokens_per_s < 40000


def test_a_model_that_fails_the_probe_gets_the_window_and_fails_on_the_question_instead():
    def broken(messages):
        raise RuntimeError("the model process died")

    model = fake_loaded_model(8192, 128, responder=broken, prompt_tokens_per_s=1e6)
    assert speed.context_budget_tokens(AnswerSettings(), model) is None
    assert model.prompt_speed is None  # nothing made up is kept
