"""The offline answerer: no model, it quotes the sentences of the sources that best answer the
question and cites them. It says what it is, so nobody mistakes it for a generated answer.

What it prefers, with the project's own tokenizer and stemmer (`LexicalEncoder.terms`):

- A source counts only if its passage (heading included) has enough of the question's terms
  together: all of one or two, half of three or more. When none has, the answer says that
  nothing relevant was found in the collection, and how many documents it holds, rather
  than quote text that only shares a word with the question.
- Sentences with more of the question's terms, from the sources that have more of them.
- Definitions ("A namespace is a mapping from names to objects.", an API entry's "Return
  ..." under its signature), for any question and most for "what is" ones.
- For "how do I" questions, sentences that show code (`try`, `json.dump(x, f)`, an API
  signature), and the short code example that a quoted sentence introduces ("For
  example:"), quoted whole or not at all.
- A sentence comes with the next one when that one goes on about it ("They are written
  like regular functions but ..."); for "how do I descale ..." a sentence that tells to
  descale comes with the rest of its paragraph: the method.
- A sentence that a chunk's start cut ("…handlers do not handle ...") is quoted whole when
  another source holds its beginning (overlapping chunks), citing both; otherwise it is
  quoted "…" after the whole ones, so that an answer does not start mid-sentence.
- In a "how do I" answer, no sentence that introduces an example the passage cuts off.
- A question about a document by its title ("What is “Garden notes” about?", "Give me an
  overview of Bread recipe.") is answered with that document's opening sentences: they
  rarely name the document, so no term of the question would find them.
- "What is the price of X?" when no passage mentions a price says so before quoting what
  the passages say of X.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from rag_async.domain.generation import Generation, GenerationReport, Usage, approximate_tokens
from rag_async.domain.identity import shown_collection
from rag_async.domain.sources import Source
from rag_async.providers.llm.asking import attribute_asked, document_asked_about
from rag_async.providers.llm.passages import blocks, code_quote, items
from rag_async.store.conversations import Turn, search_query

QUOTING = "From the documents:"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(*_\[])")
_ENDS_SENTENCE = re.compile(r"[.!?:][\"')\]*_`]*$")
_PIECE = re.compile(r"\S+\s*")
_WORD = re.compile(r"\w+")
_LONGEST_QUOTE = 400
_MOST_QUOTES = 3
_CODE_SPAN = re.compile(r"`[^`]*`")
_SYMBOLS = "_|{}#\\^~$&@"
# What shows code inside a sentence: a code span, a call, a dotted or snake_case name.
_CODE_IN_SENTENCE = re.compile(
    r"`[^`]+`|\b[A-Za-z_]\w*\([^()]*\)|\b[A-Za-z_]\w*\.[A-Za-z_]\w+|\b[a-z]+_[a-z_]+\b"
)
# "How do I ...", "How can I ...", "How to ...", "What is the best way to ...".
_HOW = re.compile(
    r"^\W*(?:how\s+(?:do|does|can|could|should|would|to|is|are)\b"
    r"|what(?:'s|\s+is)\s+the\s+(?:best\s+|right\s+|correct\s+)?way\s+to\b"
    r"|is\s+there\s+a\s+way\s+to\b)",
    re.IGNORECASE,
)
# "What is ...", "What are ...", "What does X mean", "Define ...", "Explain ...".
_WHAT = re.compile(
    r"^\W*(?:(?:what|who)(?:'s|\s+(?:is|are|was|were))\b|(?:define|explain|describe)\b)"
    r"|\bmean(?:s|ing)?\b",
    re.IGNORECASE,
)
# A definition: its subject (one of the question's terms) within the first words, then one
# of these verbs; or a name given ("is called a *namespace*", "known as the GIL").
_DEFINING = re.compile(
    r"^(?:\W*\w+\W+){0,3}?(?:(?:is|are)\s+(?:a|an|the|just|one|called|used)\b"
    r"|means\b|refers\s+to\b|consists\s+of\b|represents\b)",
    re.IGNORECASE,
)
_NAMING = re.compile(r"\b(?:called|known\s+as)\s+((?:\W*\w+){1,4})", re.IGNORECASE)
# Sentences that go on about the one before them.
_GOES_ON = re.compile(r"^(?:It|They|This|These|Such|Its|Their)\b")

# How a sentence's score is made (each part at most about one question term's worth):
_CHUNK_WEIGHT = 0.5  # × the share of the question's terms its passage has
_RANK_STEP = 0.02  # per source rank: the retriever's order breaks ties
# A "how do I" question: a sentence that introduces a code example with the question's terms
# in it, one that shows code itself, one that introduces an example without them.
_EXAMPLE_BONUS, _CODE_BONUS, _OTHER_EXAMPLE_BONUS = 0.5, 0.25, 0.1
_FRAGMENT_PENALTY = 0.15  # the end of a sentence cut at the chunk's start, quoted "…"
_DEFINITION_BONUS = 0.25  # a definition; twice that for a "what is" question


@dataclass(slots=True)
class _Sentence:
    text: str
    source: Source
    order: tuple[int, int, int]  # (source rank, block, sentence): reading order
    terms: frozenset[str]
    code: str | None = None  # the code example it introduces
    continued: list[str] = field(default_factory=list)  # sentences that go on about it
    following: list[str] = field(default_factory=list)  # the rest of its paragraph
    also: Source | None = None  # another source it is quoted from (its start, or its end)
    repeated: bool = False  # quoted as another sentence (a fragment it completes)
    score: float = 0.0

    @property
    def cited(self) -> str:
        numbers = [self.source.n] + ([self.also.n] if self.also is not None else [])
        return f"[{', '.join(str(n) for n in sorted(set(numbers)))}]"


class ExtractiveAnswerer:
    name = "extractive (offline: quotes the best-matching sentences)"

    def __init__(
        self,
        terms: Callable[[str], list[str]],
        documents: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        """`terms`: the lexical encoder's tokenizer and stemmer. `documents`: how many
        documents a collection (its stored name) holds, told when nothing relevant is found."""
        self._terms = terms
        self._documents = documents

    async def stream(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        collection: str | None = None,
        history: Sequence[Turn] = (),
        generation: Generation | None = None,
        report: GenerationReport | None = None,
    ) -> AsyncIterator[str]:
        """The quotes, word by word. Of the client's wishes it honours the token limit and
        the stop sequences; instructions and temperature mean nothing to a quote. Its token
        counts are approximate (domain/generation.py): it has no tokenizer of a model."""
        generation = generation or Generation()
        text = await self._text(question, sources, collection, history)
        text, cut = limited(text, generation)
        if report is not None:
            given = [question, *(s.text for s in sources), generation.instructions or ""]
            given += [f"{turn.question}\n{turn.answer}" for turn in history]
            report.usage = Usage.counted("\n".join(given), text)
            report.incomplete = "max_output_tokens" if cut else None
        # Word-sized pieces, like a model's tokens, so clients exercise the same code path.
        for piece in _PIECE.findall(text):
            yield piece

    async def _text(
        self,
        question: str,
        sources: Sequence[Source],
        collection: str | None,
        history: Sequence[Turn],
    ) -> str:
        # A follow-up ("and at what temperature?") is quoted for with what it follows up on,
        # as it was searched for (conversations.py).
        quotes = self.quotes(search_query(question, history, self._terms), sources)
        if quotes:
            text = quotes
        else:
            collection = collection or next((s.collection for s in sources if s.collection), None)
            count = None
            if collection is not None and self._documents is not None:
                count = await self._documents(collection)
            text = self.nothing_found(question, sources, collection=collection, documents=count)
        return text

    def answer(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        collection: str | None = None,
        documents: int | None = None,
    ) -> str:
        """The whole answer at once: the quotes, or what says that nothing relevant was found
        in `collection` (by default the sources') of `documents` documents."""
        quotes = self.quotes(question, sources)
        if quotes:
            return quotes
        collection = collection or next((s.collection for s in sources if s.collection), None)
        return self.nothing_found(question, sources, collection=collection, documents=documents)

    def quotes(self, question: str, sources: Sequence[Source]) -> str:
        """The answer that quotes the sources, or "" when none is relevant enough."""
        subject = document_asked_about(question)
        if subject is not None:
            about = self._about_document(subject, sources)
            if about:
                return about
        how = bool(_HOW.search(question))
        candidates = self._scored(question, sources, how=how)
        if not candidates:
            return ""
        best = sorted(candidates, key=lambda s: (-s.score, s.order))[:_MOST_QUOTES]
        # Back into reading order; the end of a sentence whose beginning no source holds
        # last, so that the answer does not start "…handlers do not handle".
        best.sort(key=lambda s: (s.text.startswith("…"), s.order))
        action = self._action(question) if how else None
        quoted = {sentence.text for sentence in best}
        parts: list[str] = []
        for sentence in best:
            said = [sentence.text, *sentence.continued]
            if action and sentence.code is None and self._first_term(sentence.text) == action:
                said += self._method(sentence, quoted, len(" ".join(said)))
            parts.append(f"{' '.join(said)} {sentence.cited}")
            if how and sentence.code:
                parts[-1] += f"\n\n{sentence.code}\n\n"
        answer = f"{QUOTING} " + " ".join(parts).replace("\n\n ", "\n\n").rstrip()
        return self._missing_attribute(question, sources) + answer

    def _about_document(self, subject: str, sources: Sequence[Source]) -> str:
        """The opening sentences of the document (or section) named `subject`, in reading
        order, the first sentence of each paragraph first; "" when no source bears the name."""
        wanted = frozenset(self._terms(subject))
        named = [source for source in sources if wanted and self._named(source, wanted)]
        if not named:
            return ""
        document = named[0].document_id  # the best-ranked one, if several bear the name
        chosen = sorted((s for s in named if s.document_id == document), key=lambda s: s.chunk)
        sentences: list[_Sentence] = []
        seen: set[str] = set()
        for position, source in enumerate(chosen):
            for sentence in self._sentences(source, position):
                key = sentence.text[:60].lower()
                if key not in seen and not sentence.text.startswith("…"):
                    seen.add(key)
                    sentences.append(sentence)
        # A paragraph's first sentence says what it is about; then the ones after it.
        picked = sorted(sentences, key=lambda s: (s.order[2] > 0, s.order))[:_MOST_QUOTES]
        picked.sort(key=lambda s: s.order)
        if not picked:
            return ""
        parts = [f"{' '.join([s.text, *s.continued])} {s.cited}" for s in picked]
        return f"{QUOTING} " + " ".join(parts)

    def _named(self, source: Source, wanted: frozenset[str]) -> bool:
        """The source's title or one of its headings is `wanted` (its terms), or most of it:
        "Brewmaster 3000" names "Brewmaster 3000 kettle manual"."""
        labels = [source.title, *(source.heading or "").split(" › ")]
        for label in labels:
            terms = set(self._terms(label))
            if terms and wanted <= terms and 2 * len(wanted) >= len(terms):
                return True
        return False

    def _missing_attribute(self, question: str, sources: Sequence[Source]) -> str:
        """ "No passage mentions "price". " when the question asks for the price of something
        and no passage has the word: the quotes that follow are about the thing, not its
        price."""
        asked = attribute_asked(question)
        if asked is None:
            return ""
        attribute = frozenset(self._terms(asked[0]))
        for source in sources:
            passage = f"{source.heading or source.title}\n{source.text}"
            if not attribute or attribute.intersection(self._terms(passage)):
                return ""
        return f"No passage mentions {_listed([asked[0]], 'or')}. "

    def _action(self, question: str) -> str | None:
        """The term of what a "how do I" question asks to do: "descale" in "How do I descale
        the kettle?"."""
        found = _HOW.search(question)
        if found is None:
            return None
        rest = question[found.end() :]
        rest = re.sub(r"^\W*(?:i|we|you|one)\b", "", rest, flags=re.IGNORECASE)
        return self._first_term(rest)

    def _first_term(self, text: str) -> str | None:
        word = _WORD.search(text)
        terms = self._terms(word[0]) if word else []
        return terms[0] if terms else None

    def _method(self, sentence: _Sentence, quoted: set[str], length: int) -> list[str]:
        """The rest of the paragraph of a sentence that tells to do what was asked: the
        method ("Descale the kettle every four weeks. Fill it half with water ...")."""
        method: list[str] = []
        for text in sentence.following[len(sentence.continued) :]:
            length += len(text) + 1
            if text in quoted or length > _LONGEST_QUOTE or not _ENDS_SENTENCE.search(text):
                break
            method.append(text)
        return method

    def _scored(self, question: str, sources: Sequence[Source], *, how: bool) -> list[_Sentence]:
        """Every quotable sentence of the relevant sources, scored."""
        wanted = frozenset(self._terms(question))
        if not wanted:
            return []
        what = bool(_WHAT.search(question))
        needed = len(wanted) if len(wanted) <= 2 else math.ceil(len(wanted) / 2)
        relevant: list[tuple[int, int, list[_Sentence]]] = []
        for rank, source in enumerate(sources):
            passage = self._terms(f"{source.heading or source.title}\n{source.text}")
            matched = len(wanted.intersection(passage))
            if matched >= needed:
                relevant.append((rank, matched, self._sentences(source, rank)))
        _complete_fragments([sentence for _, _, found in relevant for sentence in found])
        candidates: list[_Sentence] = []
        seen: set[str] = set()  # overlapping chunks repeat sentences: quote each once
        for rank, matched, found in relevant:
            for sentence in found:
                # Not quoted: a repeat, or a sentence that introduces an example cut off (a
                # "how do I" answer shows the examples it promises).
                if sentence.repeated or (how and _dangling(sentence)):
                    continue
                key = sentence.text[:60].lower()
                shown = _CODE_IN_SENTENCE.search(sentence.text) is not None
                overlap = len(wanted & sentence.terms) / len(wanted)
                if key in seen or not (overlap or (how and shown)):
                    continue
                seen.add(key)
                score = overlap + _CHUNK_WEIGHT * matched / len(wanted) - _RANK_STEP * rank
                if how:
                    score += self._code_bonus(sentence, shown, wanted)
                if self._defines(sentence.text, wanted):
                    score += _DEFINITION_BONUS * (2 if what else 1)
                if sentence.text.startswith("…"):
                    score -= _FRAGMENT_PENALTY
                sentence.score = score
                candidates.append(sentence)
        return candidates

    def nothing_found(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        collection: str | None,
        documents: int | None,
    ) -> str:
        """Says that nothing relevant was found, where, and why."""
        where = "the documents"
        if collection is not None:
            name = shown_collection(collection)
            if documents == 0:
                return f'Collection "{name}" holds no documents yet: there is nothing to quote.'
            size = "" if documents is None else f" ({documents} document{_s(documents)})"
            where = f'collection "{name}"{size}'
        words = list(dict.fromkeys(w for w in _WORD.findall(question) if self._terms(w)))
        if not words:
            why = "the question has no word to look for (only words such as what, how, the)"
        elif not sources:
            why = f"no passage mentions {_listed(words, 'or')}"
        elif len(words) == 1:
            why = f"no passage says anything about {_listed(words, 'and')}"
        else:
            why = f"no passage mentions enough of {_listed(words, 'and')} together"
        return f"Nothing relevant to that was found in {where}: {why}."

    async def aclose(self) -> None:
        return None

    def _code_bonus(self, sentence: _Sentence, shown: bool, wanted: frozenset[str]) -> float:
        if sentence.code is not None:
            if wanted.intersection(self._terms(sentence.code)):
                return _EXAMPLE_BONUS
            return max(_OTHER_EXAMPLE_BONUS, _CODE_BONUS if shown else 0.0)
        return _CODE_BONUS if shown else 0.0

    def _defines(self, sentence: str, wanted: frozenset[str]) -> bool:
        """A definition of one of the question's terms ("A tuple consists of ...", "... is
        called *name mangling*", "Return ..." under an API entry's signature)."""
        if sentence.startswith("`") and "`: Return" in sentence[:200]:
            return True
        named = [found[0] for found in [_DEFINING.match(sentence)] if found is not None]
        named += [found[1] for found in _NAMING.finditer(sentence)]
        return any(wanted.intersection(self._terms(words)) for words in named)

    def _sentences(self, source: Source, rank: int) -> list[_Sentence]:
        """The quotable sentences of a passage's prose, not cut by the chunk's end, each with
        the code example it introduces, the sentences about it and the rest of its paragraph."""
        parts = blocks(source.text)
        sentences: list[_Sentence] = []
        for b, block in enumerate(parts):
            if block.kind != "prose":
                continue
            pieces = [piece for item in items(block.text) for piece in _SENTENCE_END.split(item)]
            before = parts[b - 1] if b else None
            after = parts[b + 1] if b + 1 < len(parts) else None
            last_block = b == len(parts) - 1
            previous: _Sentence | None = None
            for s, text in enumerate(pieces):
                first = b == 0 and s == 0
                last = s == len(pieces) - 1
                if first and source.chunk > 0 and not text[:1].isupper():
                    if len(pieces) == 1 and not _ENDS_SENTENCE.search(text):
                        continue
                    text = f"…{text}"  # the end of a sentence cut at the chunk's start
                if last and last_block and not _ENDS_SENTENCE.search(text):
                    continue  # cut at the chunk's end
                if s == 0 and before is not None and before.kind == "signature":
                    text = f"`{before.text}`: {text}"  # an API entry: its name and its doc
                if (
                    previous is not None
                    and (_GOES_ON.match(text) or _introduces(text))
                    and not previous.continued
                    and len(previous.text) + len(text) <= _LONGEST_QUOTE
                ):
                    previous.continued.append(text)
                    if last and after is not None:
                        previous.code = code_quote(after, text)
                    continue
                if not (
                    20 < len(text) <= _LONGEST_QUOTE and _starts_sentence(text) and _prose(text)
                ):
                    previous = None
                    continue
                sentence = _Sentence(
                    text,
                    source,
                    (rank, b, s),
                    frozenset(self._terms(text)),
                    code=code_quote(after, text) if last and after is not None else None,
                    following=pieces[s + 1 :],
                )
                sentences.append(sentence)
                previous = sentence
        return sentences


def limited(text: str, generation: Generation) -> tuple[str, bool]:
    """`text` up to its first stop sequence, and within the token limit (approximate
    tokens, whole words kept); whether the limit cut it."""
    for stop in generation.stop:
        if stop and stop in text:
            text = text[: text.index(stop)]
    limit = generation.max_output_tokens
    if limit is None or approximate_tokens(text) <= limit:
        return text, False
    kept: list[str] = []
    count = 0
    for piece in _PIECE.findall(text):
        count += approximate_tokens(piece)
        if count > limit:
            break
        kept.append(piece)
    return "".join(kept).rstrip(), True


def _complete_fragments(sentences: Sequence[_Sentence]) -> None:
    """A sentence cut at its chunk's start ("…handlers do not handle ...") takes the whole
    sentence from a source that holds it (the chunk before, overlapping), and cites both; the
    whole one is then a repeat, and left out."""
    whole = [s for s in sentences if not s.text.startswith("…")]
    for fragment in sentences:
        if not fragment.text.startswith("…"):
            continue
        tail = fragment.text[1:]
        for sentence in whole:
            if sentence.text.endswith(tail) and sentence.source.n != fragment.source.n:
                fragment.text = sentence.text
                fragment.terms = sentence.terms
                fragment.also = sentence.source
                fragment.order = min(fragment.order, sentence.order)
                sentence.repeated = True  # quoted as the fragment, with its code example
                break


def _dangling(sentence: _Sentence) -> bool:
    """A sentence that introduces an example the passage does not hold whole ("… as well):"
    and the chunk ends): quoted, it would promise what the answer cannot show."""
    last = sentence.continued[-1] if sentence.continued else sentence.text
    return sentence.code is None and last.rstrip("*_`").endswith(":")


def _introduces(text: str) -> bool:
    """A short sentence that only introduces what follows ("For example:")."""
    return len(text) <= 40 and text.endswith(":")


def _prose(text: str) -> bool:
    """Text that reads as a sentence, not as a grammar rule or a line of symbols."""
    words = _CODE_SPAN.sub("x", text)
    return sum(words.count(c) for c in _SYMBOLS) <= len(words) // 25


def _starts_sentence(text: str) -> bool:
    """Starts as a sentence does, or is the end of one cut at the chunk's start ("…")."""
    first = text.lstrip("*_`([\"'")[:1]
    return first.isupper() or first.isdigit() or text.startswith(("`", "…"))


def _listed(words: Sequence[str], conjunction: str) -> str:
    quoted = [f'"{word}"' for word in words]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} {conjunction} {quoted[-1]}"


def _s(count: int) -> str:
    return "" if count == 1 else "s"
