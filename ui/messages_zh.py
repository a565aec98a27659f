"""Simplified Chinese texts of the app: English message → 中文 (Traditional is derived by OpenCC,
see rag.i18n). Keep ``{name}`` fields as they are; tests/test_i18n.py checks that every message
the app shows is here and that the fields match."""

from __future__ import annotations

from rag.models.loader import STAND_IN_NOTICE
from rag.quotes import quote_notice
from rag.summarize import EXTRACTIVE_NOTICE

MESSAGES: dict[str, str] = {
    # -- sidebar: knowledge bases
    "Knowledge base": "知识库",
    "'default' is {default}; others live in {root}.": "“default”位于 {default}；其他知识库位于 {root}。",
    "Manage knowledge bases": "管理知识库",
    "New knowledge base": "新建知识库",
    "e.g. 合同 or reports-2024": "例如：合同 或 reports-2024",
    "Create": "创建",
    "The default knowledge base cannot be deleted (delete its documents instead).":
        "默认知识库不能删除（可以删除其中的文档）。",
    "Delete '{name}'…": "删除“{name}”…",
    "Delete knowledge base '{name}' with all its documents and uploads? This cannot be undone.":
        "删除知识库“{name}”及其全部文档和上传的文件？此操作无法撤销。",
    "Yes, delete": "确认删除",
    "Cancel": "取消",
    "Deleted knowledge base '{name}'": "已删除知识库“{name}”",
    "Give the knowledge base a name.": "请给知识库起个名字。",
    "'{name}' is the name of the default knowledge base.": "“{name}”是默认知识库的名字。",
    "Use letters, digits, Chinese characters, spaces, '-', '_' or '.' (at most 64), starting with a letter, "
    "digit or character.":
        "请使用字母、数字、汉字、空格、“-”、“_”或“.”（最多 64 个），并以字母、数字或汉字开头。",
    "A knowledge base named '{name}' already exists.": "已经有名为“{name}”的知识库。",
    # -- sidebar: model and answering
    "Model": "模型",
    "Choose the model": "选择模型",
    "Stand-in (packaged SmolLM2)": "替身模型（自带的 SmolLM2）",
    "Chinese-Alpaca-2 variant": "Chinese-Alpaca-2 系列模型",
    "Local path": "本地路径",
    "Server URL": "服务地址",
    "Variant (downloaded from the Hub when missing and allowed)": "型号（本地没有且允许联网时从 Hub 下载）",
    "Local path (.gguf file, HF model folder) or Hub id": "本地路径（.gguf 文件、HF 模型文件夹）或 Hub 名称",
    "Server URL (OpenAI-compatible)": "服务地址（兼容 OpenAI 接口）",
    "Backend": "推理后端",
    "Context length (0 = the model's own)": "上下文长度（0 = 使用模型自身的长度）",
    "Apply": "应用",
    "Fill in the field for the model source you picked.": "请填写所选模型来源对应的输入框。",
    "Answering": "回答设置",
    "Passages per question (k)": "每个问题检索的段落数（k）",
    "How many passages retrieval hands to the model (more on long-context models).":
        "检索交给模型的段落数量（长上下文模型可以多一些）。",
    "Reranker (empty = off)": "重排序模型（留空 = 不使用）",
    "A cross-encoder (Hub name or model folder) that reads the best {n} passages found together with the question "
    "and reorders them: more accurate, but slower on a CPU.":
        "一个交叉编码器（Hub 名称或模型文件夹），把检索到的前 {n} 个段落和问题放在一起阅读并重新排序："
        "更准确，但在 CPU 上较慢。",
    "Reranker not available, searching without it: {error}": "重排序模型不可用，检索时不使用它：{error}",
    "Temperature": "温度",
    "0 = always the most likely words.": "0 = 总是选择可能性最大的词。",
    "Max new tokens": "最多生成的 token 数",
    "Longest answer the model may write.": "模型回答的最大长度。",
    "Language": "界面语言",
    "Context per answer": "每次回答的上下文",
    "Fast: what the model reads in about {s} s": "快速：模型约 {s} 秒内能读完的量",
    "The model's whole window": "模型的整个窗口",
    "{n} tokens": "{n} 个 token",
    "How much of the documents goes into the model's prompt. On a CPU a full window takes minutes before the first "
    "word; 'fast' widens the passages only as far as the model reads them within the wait (its speed is measured "
    "once).":
        "放进模型提示中的文档内容有多少。在 CPU 上，填满整个窗口要等几分钟才出第一个字；“快速”只在模型能在"
        "这段等待时间内读完的范围内扩展段落（模型的速度只测一次）。",
    "Automatic (browser language)": "自动（跟随浏览器语言）",
    "Language of this interface; answers follow the language of each question.":
        "本界面的语言；回答的语言跟随每个问题的语言。",
    "the stand-in model": "替身模型",
    "Loading {name} (first time only)…": "正在加载 {name}（仅第一次）…",
    "Model not available: {error}": "模型不可用：{error}",
    "Pick another model below, or set DOCQA_MODEL__NAME and restart.": "请在下方选择其他模型，或设置 DOCQA_MODEL__NAME 后重启。",
    "context window **{tokens}** tokens": "上下文窗口 **{tokens}** 个 token",
    "Stand-in model (no model configured).": "替身模型（尚未配置模型）。",
    "No model: {error}": "没有可用的模型：{error}",
    "A stand-in model is answering.": "正在由替身模型回答。",
    # -- page, tabs
    "Opening knowledge base '{name}' (first time: loading the embedder)…": "正在打开知识库“{name}”（第一次会加载向量模型）…",
    "The knowledge base at {path} cannot be opened: {error}": "无法打开位于 {path} 的知识库：{error}",
    "Ask your documents": "向你的文档提问",
    "Knowledge base **{name}** · {n} document(s) · `{path}`": "知识库 **{name}** · {n} 个文档 · `{path}`",
    "Use only these documents (empty = all)": "只使用这些文档（留空 = 全部）",
    "All documents": "全部文档",
    "Questions and summaries only read the documents chosen here.": "提问和摘要只读取这里选中的文档。",
    "Chat": "问答",
    "Documents": "文档",
    "Summary": "摘要",
    # -- documents
    "Add documents — drag and drop or browse (PDF, DOCX, HTML, Markdown, text; up to {mb} MB each)":
        "添加文档——拖放或浏览选择（PDF、DOCX、HTML、Markdown、纯文本；每个最大 {mb} MB）",
    "**Adding {n} file(s)** — you can keep asking questions meanwhile.": "**正在添加 {n} 个文件**——这期间可以继续提问。",
    "{done}/{total} files": "文件 {done}/{total}",
    "{done}/{total} chunks": "文本块 {done}/{total}",
    "about {time} left": "约剩 {time}",
    "OCR page {page}/{pages} of {name}": "正在识别（OCR）{name} 第 {page}/{pages} 页",
    ", ": "，",
    "Adding the files failed: {error}": "添加文件失败：{error}",
    "**Last upload** — {summary}": "**上次上传**——{summary}",
    "Dismiss": "关闭",
    "Documents ({n})": "文档（{n}）",
    "This knowledge base is empty. Drop files above to add them.": "这个知识库还是空的。把文件拖到上方即可添加。",
    "{pages} page(s) · {chunks} chunk(s) · added {when}": "{pages} 页 · {chunks} 个文本块 · 添加于 {when}",
    "Delete {name}": "删除 {name}",
    "Delete **{name}**? It leaves the knowledge base and its uploaded file is deleted.":
        "删除 **{name}**？它将移出知识库，上传的文件也会被删除。",
    "Deleting {name}…": "正在删除 {name}…",
    "Deleted {name}.": "已删除 {name}。",
    "Re-index": "重新索引",
    "{n} document(s) were indexed by an older version: text boxes, list numbers, notes and new ways of matching "
    "words are missing from them until they are indexed again.":
        "有 {n} 个文档是用旧版本索引的：在重新索引之前，其中的文本框、列表编号、脚注以及新的词语匹配方式都不会生效。",
    "Index them again now": "立即重新索引这些文档",
    "Read the documents' files again: changed files are re-indexed, unchanged ones are skipped. 'Rebuild' "
    "re-splits and re-embeds everything (after changing chunking or embedding settings).":
        "重新读取文档文件：有改动的文件会重新索引，没有改动的跳过。“从头重建”会重新切分并重新向量化全部文档"
        "（修改了切分或向量模型设置之后使用）。",
    "Rebuild from scratch": "从头重建",
    "Re-index now": "立即重新索引",
    "Re-indexing…": "正在重新索引…",
    "added {added}, updated {updated}, unchanged {unchanged}, chunks {chunks}, failed {failed}":
        "新增 {added}，更新 {updated}，未变 {unchanged}，文本块 {chunks}，失败 {failed}",
    "{path}: the file is gone; the stored copy was kept (delete it above if unwanted).":
        "{path}：文件已不存在；已保留知识库中的副本（不需要的话可在上方删除）。",
    "Re-index finished": "重新索引完成",
    # upload outcomes and statuses
    "added": "已添加",
    "updated": "已更新",
    "unchanged": "未变",
    "duplicate": "重复",
    "failed": "失败",
    "too large": "过大",
    "unsupported": "不支持",
    "checking": "检查中",
    "reading": "读取中",
    "embedding": "向量化中",
    "added to the knowledge base": "已加入知识库",
    "updated (the file of this name had other content before)": "已更新（同名文件此前的内容不同）",
    "already in the knowledge base (unchanged)": "已在知识库中（未改变）",
    "could not be ingested": "无法导入",
    "the ingestion did not report on this file": "导入过程没有报告这个文件的结果",
    "{size} MB is above the upload limit of {limit} MB (setting ui.max_upload_mb, DOCQA_UI__MAX_UPLOAD_MB).":
        "{size} MB 超过了 {limit} MB 的上传上限（设置项 ui.max_upload_mb，DOCQA_UI__MAX_UPLOAD_MB）。",
    "'{suffix}' files cannot be read; supported: {supported}.": "无法读取“{suffix}”文件；支持的格式：{supported}。",
    "already in the knowledge base (as {names}).": "已在知识库中（名为 {names}）。",
    "could not be saved: {error}": "无法保存：{error}",
    "same content as {first}, which could not be stored: {reason}": "与 {first} 内容相同，而后者未能存入：{reason}",
    "same content as {first} in this upload; stored once.": "与本次上传中的 {first} 内容相同；只存了一份。",
    " (saved as {name})": "（保存为 {name}）",
    "read only in part: {warning}": "只读取了部分内容：{warning}",
    # -- chat
    "**No documents yet.** Open the **Documents** tab and drop PDF, Word, HTML, Markdown or text files there; then "
    "ask questions here. Answers cite the passages they use [1], [2] …":
        "**还没有文档。** 打开 **文档** 标签页，把 PDF、Word、HTML、Markdown 或纯文本文件拖进去，然后在这里提问。"
        "回答会标注所引用的段落 [1]、[2] …",
    "Answer with": "回答方式",
    "Quotes from the documents": "摘录文档原文",
    "The model's own answer": "由模型作答",
    "Only the small stand-in model is available, and it cannot answer well: answers are the documents' own "
    "sentences that best match the question, with their sources. Choose **The model's own answer** to let it "
    "write anyway, or pick a Chinese-Alpaca-2 model.":
        "目前只有小型替身模型，它答不好问题：回答是文档中与问题最匹配的原句，并附出处。"
        "选择 **由模型作答** 可以让它照样作答，或者选用 Chinese-Alpaca-2 模型。",
    "Show me the evidence: the documents' own sentences that best match the question.":
        "给出证据：文档中与问题最匹配的原句。",
    "Ask a question about your documents…": "就你的文档提个问题…",
    "Add documents first": "请先添加文档",
    "The model could not be loaded: {error}": "无法加载模型：{error}",
    "Searching the documents and answering…": "正在检索文档并作答…",
    "Answering failed: {error}": "回答失败：{error}",
    "Sources — open one to read the passage": "来源——展开即可阅读段落",
    "p. {page}": "第 {page} 页",
    "pp. {first}–{last}": "第 {first}–{last} 页",
    "relevance {score}": "相关度 {score}",
    "(empty passage)": "（空段落）",
    "Quoted from the documents (no model wrote this)": "摘自文档原文（并非模型生成）",
    "Searched for: {queries}": "检索了：{queries}",
    "OCR": "OCR 识别",
    "Show page {page} with the passage marked": "显示第 {page} 页并标出这段文字",
    "The page cannot be shown: {error}": "无法显示这一页：{error}",
    # -- retrieval test
    "Retrieval test": "检索测试",
    "See what a question finds before asking it: the ranked passages of the chosen documents with "
    "their scores, and which of them a threshold keeps. No model is used.":
        "提问之前先看看一个问题能检索到什么：所选文档中排好序的段落及其得分，以及哪些段落能通过阈值。不使用模型。",
    "Question": "问题",
    "Passages to show": "显示的段落数",
    "Searching failed: {error}": "检索失败：{error}",
    "Try a relevance threshold": "试一个相关度阈值",
    "Answers use {threshold} (settings.retrieval.relevance_threshold).":
        "回答时使用 {threshold}（settings.retrieval.relevance_threshold）。",
    "No passage was found at all.": "一个段落也没有找到。",
    "{kept} of {n} passages reach the threshold {threshold}: only those would be used to answer.":
        "{n} 个段落中有 {kept} 个达到阈值 {threshold}：回答时只会用到这些。",
    "below the threshold": "低于阈值",
    "meaning (dense)": "语义（向量）",
    "cosine {cosine}": "余弦相似度 {cosine}",
    "words (BM25)": "词语（BM25）",
    "BM25 {bm25}": "BM25 得分 {bm25}",
    "reranker": "重排模型",
    "Ranked low: {kind}": "排序靠后：{kind}",
    "reference list": "参考文献列表",
    "repeated text": "重复文字",
    "abstract in the other language": "另一种语言的摘要",
    "The documents are in Chinese and the question is not. No model that can translate it is loaded "
    "(the stand-in cannot), so it was searched as asked only; configure Chinese-Alpaca-2 to search its "
    "translation too.":
        "文档是中文，问题不是。当前没有能翻译问题的模型（替身模型不能翻译），所以只按原问题检索；"
        "配置 Chinese-Alpaca-2 后会同时检索问题的译文。",
    "The documents are in English and the question is not. No model that can translate it is loaded "
    "(the stand-in cannot), so it was searched as asked only; configure Chinese-Alpaca-2 to search its "
    "translation too.":
        "文档是英文，问题不是。当前没有能翻译问题的模型（替身模型不能翻译），所以只按原问题检索；"
        "配置 Chinese-Alpaca-2 后会同时检索问题的译文。",
    "The documents are in Chinese and no model translated the question, so its words were also searched as "
    "rendered one by one by a dictionary (CC-CEDICT); Chinese-Alpaca-2 translates whole questions and finds more.":
        "文档是中文，没有模型翻译这个问题，所以还用词典（CC-CEDICT）逐词译成中文一并检索；"
        "Chinese-Alpaca-2 能翻译整个问题，找得更准。",
    "This app serves one shared knowledge base (its catalogue is in PostgreSQL); another one needs its own "
    "database and app instances (docs/deploy.md).":
        "本应用服务于一个共享知识库（目录在 PostgreSQL 中）；另建知识库需要单独的数据库和应用实例（见 docs/deploy.md）。",
    "The model gave no usable translation of the question; it was searched as asked only.":
        "模型没有给出可用的问题译文，所以只按原问题检索。",
    "No passage of the chosen documents was relevant enough; nothing was cited.":
        "所选文档中没有足够相关的段落；没有引用任何内容。",
    # -- summary
    "all documents": "全部文档",
    "Summarises: {scope} (choose above).": "摘要范围：{scope}（在上方选择）。",
    "Outline and key sentences (no model)": "提纲和关键句（不用模型）",
    "Written by the model": "由模型撰写",
    "Strategy": "策略",
    "auto — pick by length": "auto——按长度自动选择",
    "stuff — everything in one prompt": "stuff——全部内容放进一个提示",
    "map_reduce — summarise parts, then combine": "map_reduce——先分段摘要，再合并",
    "refine — read part by part, improving the summary": "refine——逐段阅读，不断完善摘要",
    "Summarize": "生成摘要",
    "Finding the outline and the most central sentences…": "正在找出提纲和最核心的句子…",
    "Summarizing ({strategy})…": "正在生成摘要（{strategy}）…",
    "Reading the documents…": "正在读取文档…",
    "one prompt": "一次完成",
    "summarising parts": "分段摘要",
    "combining": "合并",
    "refining": "逐段完善",
    "{phase}: step {done} of {total}": "{phase}：第 {done} 步，共 {total} 步",
    "Summarizing failed": "生成摘要失败",
    "Summary ready — strategy {strategy}, {steps} model call(s)": "摘要完成——策略 {strategy}，调用模型 {steps} 次",
    "**Outline and key sentences** · {n} document(s)": "**提纲和关键句** · {n} 个文档",
    "**Outline**": "**提纲**",
    "**Key sentences**": "**关键句**",
    "Download as Markdown": "下载为 Markdown",
    "**Summary** · strategy `{strategy}` · {steps} model call(s) · {n} document(s)":
        "**摘要** · 策略 `{strategy}` · 调用模型 {steps} 次 · {n} 个文档",
    # -- conversations
    "Conversations": "对话",
    "New conversation": "新对话",
    "The conversation that is open": "当前打开的对话",
    "Open this conversation": "打开这个对话",
    "Delete this conversation": "删除这个对话",
    "Conversation deleted": "对话已删除",
    # -- notices from the library, shown as they are written there
    STAND_IN_NOTICE:
        "正在回答的是一个小型替身模型（SmolLM2-135M），不是 Chinese-Alpaca-2：回答质量会很差。"
        "请设置 DOCQA_MODEL__NAME（例如 chinese-alpaca-2-7b、本地 .gguf 文件或模型文件夹、或服务地址；"
        "`python -m rag models` 列出整个系列）以使用真正的模型。",
    quote_notice(): "摘录模式：这些是文档中与问题最匹配的原句，并附出处；不是模型写的。",
    EXTRACTIVE_NOTICE: "抽取式摘要：提纲和最核心的句子，均按文档原文摘出；不是模型写的。",
}
