"""Found however it is typed: Unicode compatibility forms and Traditional/Taiwan/Hong Kong
wording fold to one search form on both sides (BM25 tokens and the text the embedder sees),
while the text shown stays as written."""

from __future__ import annotations

import pytest

from ingest.lexical import (
    is_traditional,
    normalize,
    query_tokens,
    search_form,
    search_tokens,
)
from ingest.store import chunk_id_for
from tests.helpers_rag import make_kb

# -- Unicode compatibility forms (NFKC) -------------------------------------------------------------

SAME_WORDS = [
    ("ＺＸ－３００Ｐ的额定功率", "ZX-300P的额定功率"),  # full-width letters, hyphen, digits
    ("额定电流１２３Ａ", "额定电流123A"),  # full-width digits
    ("an eﬃcient oﬃce", "an efficient office"),  # ligatures
    ("⾦融⽇报", "金融日报"),  # Kangxi radicals, as PDF text layers often have them
    ("北京的\uf9d1\uf9e9", "北京的六里"),  # CJK compatibility ideographs
    ("第①条", "第1条"),  # circled number
]


@pytest.mark.parametrize(("typed", "plain"), SAME_WORDS)
def test_compatibility_forms_give_the_plain_tokens(typed, plain):
    assert search_tokens(typed) == search_tokens(plain)
    assert search_form(typed) == search_form(plain)


def test_nfkc_punctuation_does_not_change_words():
    """NFKC turns ：；！？（）and the full-width comma into ASCII; the words stay the same and no
    punctuation becomes a token."""
    full = "他问：“这台机器（ZX-300P）能用吗？”老师说：能！它的功率是２２００W；重量１５kg，很轻。"
    ascii_ = "他问:“这台机器(ZX-300P)能用吗?”老师说:能!它的功率是2200W;重量15kg,很轻。"
    assert search_tokens(full) == search_tokens(ascii_)
    tokens = search_tokens(full)
    assert {"机器", "功率", "重量", "2200w", "15kg", "老师"} <= set(tokens)
    assert not any(ch in t for t in tokens for ch in "：:；;！!？?（）()，,。“”")
    assert normalize("项目预算：１０，０９２元。") == "项目预算:10,092元。"


# -- Traditional, Taiwan and Hong Kong wording -------------------------------------------------------

MAINLAND = [
    ("軟體", "软件"),
    ("記憶體", "内存"),
    ("隨身碟", "U盘"),
    ("印表機", "打印机"),
    ("網路", "网络"),
    ("伺服器", "服务器"),
    ("衞生署", "卫生署"),  # a Hong Kong variant character (hk2s)
]


@pytest.mark.parametrize(("regional", "mainland"), MAINLAND)
def test_regional_words_meet_the_mainland_words(regional, mainland):
    sentence = f"請確認{regional}的設定是否正確。"
    assert mainland in search_form(sentence)
    assert set(search_tokens(mainland)) <= set(search_tokens(sentence))
    assert set(query_tokens(f"{mainland}怎么设置？")) & set(search_tokens(sentence))


@pytest.mark.parametrize(
    "simplified",
    ["内存和软件", "请输入产品序列号", "打印机连不上网络", "U盘里的数据", "数据库支持多种语言", "程序模拟了互动过程"],
)
def test_simplified_text_is_left_alone(simplified):
    """tw2sp would turn the mainland 序列/模拟/互动 into 串行/仿真/交互: Simplified text never goes
    through it."""
    assert not is_traditional(simplified)
    assert search_form(simplified) == simplified


def test_mixed_text_is_judged_by_its_majority_script():
    assert is_traditional("這個軟體支援 GPU 加速")
    assert is_traditional("The 資料庫 is 很大")
    assert not is_traditional("我们的系统使用了臺灣的一个資料庫和很多软件模块")
    # a stray Traditional character in Simplified text is still folded (script only)
    assert search_form("我们使用了一个資料庫") == "我们使用了一个资料库"


def test_traditional_tokens_keep_the_plain_folding_too():
    """Taiwan 序列 is folded to mainland 串行 by tw2sp; a question with 序列 still finds it."""
    tokens = search_tokens("請輸入產品序列號與軟體版本")
    assert {"串行", "软件"} <= set(tokens)
    assert {"序列", "软体"} <= set(tokens)


# -- end to end: the right file first ------------------------------------------------------------------

MODELS_FULL_WIDTH = (
    "# ＺＸ－３００Ｐ 产品说明\n\n"
    "ＺＸ－３００Ｐ是一款工业用电动机，额定功率为２２００Ｗ，额定电压３８０Ｖ，"
    "整机重量约４５ｋｇ，适用于水泵和风机。安装前请确认电源线径符合要求。"
)
MODELS_OTHER = (
    "# ZX系列其他型号\n\n"
    "ZX-200的额定功率是1500W，ZX-500的额定功率是3700W，ZX-300的额定功率是2000W。"
    "ZX-100P和ZX-500P为低噪声版本，额定功率与标准版相同，适合楼宇使用。"
)


@pytest.fixture(scope="module")
def models_kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("fullwidth"), docs={
        "zx300p.md": MODELS_FULL_WIDTH,
        "zx_other.md": MODELS_OTHER,
    })


@pytest.mark.parametrize("mode", ["hybrid", "bm25"])
def test_full_width_model_number_is_found_by_the_ascii_question(models_kb, mode):
    hits = models_kb.retriever.search("ZX-300P的额定功率是多少？", k=2, mode=mode)
    assert hits[0].file_name == "zx300p.md"
    # the passage is shown as written
    assert "ＺＸ－３００Ｐ" in hits[0].text and "２２００Ｗ" in hits[0].text


class RecordingEmbedder:
    """Wraps an embedder and keeps every text it is asked to embed."""

    def __init__(self, inner):
        self._inner = inner
        self.passages: list[str] = []
        self.queries: list[str] = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def encode_passages(self, texts):
        self.passages.extend(texts)
        return self._inner.encode_passages(texts)

    def embed_query(self, text):
        self.queries.append(text)
        return self._inner.embed_query(text)


def test_the_embedder_sees_the_search_forms(tmp_path, embedder, kb_settings):
    """Passages and questions reach the embedder in their search form (NFKC; Traditional text
    in mainland words); the stored text stays as written."""
    from ingest.pipeline import Ingestor
    from rag.retrieval import HybridRetriever
    from tests.helpers_rag import write_docs

    recorder = RecordingEmbedder(embedder)
    ingestor = Ingestor(kb_settings, embedder=recorder)
    files = write_docs(tmp_path / "files", {"full.md": MODELS_FULL_WIDTH, "tw.md": TAIWAN_POLICY})
    assert ingestor.ingest([files]).ok
    seen = "\n".join(recorder.passages)
    assert "ZX-300P" in seen and "2200W" in seen and "ＺＸ" not in seen
    assert "U盘" in seen and "内存" in seen and "打印机" in seen and "隨身碟" not in seen
    stored = "\n".join(r.text for r in ingestor.store.chunks(
        [chunk_id_for(d.doc_id, i) for d in ingestor.store.documents() for i in range(d.chunk_count)]))
    assert "ＺＸ－３００Ｐ" in stored and "隨身碟" in stored and "U盘" not in stored

    retriever = HybridRetriever.from_store(ingestor.store)
    assert retriever.embedder is recorder
    hits = retriever.search("ＺＸ－３００Ｐ的記憶體多大？", k=1)
    assert hits
    assert recorder.queries == ["ZX-300P的記憶體多大?", "ZX-300P的内存多大?"]


def test_full_width_question_finds_the_ascii_file(models_kb):
    hits = models_kb.retrieve("ＺＸ－５００的额定功率是多少？", k=2)
    assert hits[0].file_name == "zx_other.md"


TAIWAN_POLICY = """# 資訊設備使用管理辦法

第一條　為維護本公司資訊安全，特訂定本辦法，適用於全體員工及約聘人員。

第二條　員工不得使用私人隨身碟存取公司資料；如需以隨身碟傳輸檔案，應向資訊部申請經加密之公務隨身碟。

第三條　公司配發之筆記型電腦，記憶體不得低於十六GB，硬碟應啟用全碟加密，螢幕應設定五分鐘自動鎖定。

第四條　員工安裝任何軟體前，須經直屬主管核准並由資訊部確認授權；未經授權之軟體一律移除。

第五條　印表機發生卡紙或無法列印時，請先重新開機；仍無法排除者，請填寫報修單送交資訊部。

第六條　公司內部網路之無線密碼每九十天更換一次，訪客僅得使用獨立之訪客網路。

第七條　伺服器資料每日凌晨二時自動備份，備份檔保存三十天，每季進行一次還原演練。
"""

MAINLAND_DISTRACTOR = """# 电脑配件选购与使用指南

选购U盘时要关注读写速度和接口类型，USB 3.0 的U盘拷贝大文件明显更快，金属外壳的U盘更耐用。
内存方面，日常办公8GB内存基本够用，做设计和编程建议选16GB以上的内存，最好选可升级内存的型号。
安装软件时应从官方网站下载，避免捆绑插件；正版软件一般提供免费试用期。
打印机分为喷墨打印机和激光打印机，家庭多用喷墨打印机，办公室多用激光打印机；打印机卡纸时要按说明书取出纸张。
家庭网络建议使用双频路由器，无线网络密码应设置得足够复杂。
数据可以备份到移动硬盘或网盘，小企业也可以租用云服务器存放数据。
"""

MAINLAND_QUESTIONS = [
    "员工可以用自己的U盘拷贝公司数据吗？",
    "公司配发的电脑内存至少要多大？",
    "员工安装软件之前需要谁批准？",
    "公司的打印机卡纸打不出来怎么办？",
    "公司内部网络的无线密码多久换一次？",
    "公司服务器上的数据多久备份一次？",
]


@pytest.fixture(scope="module")
def policy_kb(tmp_path_factory):
    return make_kb(tmp_path_factory.mktemp("taiwan"), docs={
        "it_policy_tw.md": TAIWAN_POLICY,
        "pc_guide.md": MAINLAND_DISTRACTOR,
    })


@pytest.mark.parametrize("question", MAINLAND_QUESTIONS)
def test_mainland_questions_find_the_taiwan_policy(policy_kb, question):
    hits = policy_kb.retrieve(question, k=3)
    assert hits[0].file_name == "it_policy_tw.md", [(h.file_name, h.text[:30]) for h in hits]
    assert hits[0].text.strip() in TAIWAN_POLICY  # shown in the original Traditional wording
