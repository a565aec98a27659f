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
