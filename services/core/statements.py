"""Reading explicit preference statements: which attribute values they like and dislike, and whether they agree.

The preference generator is tuned on the teacher's statements (``tools/core/teacher.py``), which read

    "Enjoys comedy, drama and thriller films, mostly from the 1990s and 1980s. Tends to rate horror low."

or "Has no clear preferences yet.". A generated statement can break the teacher's rule that a disliked value
is one the user never liked, e.g. "Enjoys comedy and drama films. Tends to rate comedy low.". This module
parses a statement against the catalog's attribute vocabulary (passed in: the genres of the catalog served)
and makes it safe to serve: :func:`clean_statement` keeps what is coherent.

A sentence is read clause by clause; a clause starts at a polarity cue and runs to the next cue. The cues
are the teacher's wording ("enjoys", "tends to rate ... low") plus a few plain synonyms ("likes", "prefers",
"dislikes", "avoids", ...), so paraphrases close to the template parse too. Values named before any cue are
counted as mentioned, with no polarity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LIKE = "like"
DISLIKE = "dislike"

# A "rate"-clause takes its polarity from the words after the verb: "tends to rate horror low" / "rates X highly".
_RATE_CUE = r"\b(?:tends?\s+to\s+rate|rates?|rated|rating)\b"
_DISLIKE_CUES = (
    r"\b(?:does\s+not|doesn't|do\s+not|don't|never|rarely|seldom)\s+(?:enjoy|like|love|watch|care\s+for)s?\b",
    r"\bnot\s+(?:a\s+)?(?:fan|fond)\s+of\b",
    r"\b(?:dislikes?|avoids?|hates?|steers?\s+clear\s+of)\b",
)
_LIKE_CUES = (
    r"\b(?:enjoys?|likes?|loves?|prefers?|favou?rs?|is\s+(?:a\s+)?fan\s+of|is\s+drawn\s+to|gravitates?\s+to(?:wards?)?)\b",
)
_LOW_WORDS = re.compile(r"\b(?:low|lower|lowly|poorly|badly)\b", re.IGNORECASE)
_HIGH_WORDS = re.compile(r"\b(?:high|higher|highly|well)\b", re.IGNORECASE)
# "Has no clear preferences yet." (the teacher's statement for a history with nothing to go on).
_NO_PREFERENCE = re.compile(r"\bno\s+(?:clear\s+)?preferences?\b", re.IGNORECASE)
# A decade as the teacher writes it: "the 1990s" (also "1990's").
_DECADE = re.compile(r"\b(1[0-9]|20)([0-9])0'?s\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CUES = re.compile(
    "|".join(f"(?P<{name}{n}>{pattern})" for name, patterns in (("dislike", _DISLIKE_CUES), ("like", _LIKE_CUES),
                                                                 ("rate", (_RATE_CUE,)))
             for n, pattern in enumerate(patterns)),
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Clause:
    """A run of a sentence with one polarity: ``like``, ``dislike`` or ``None`` (before any cue, or a "rate"
    clause that says neither low nor high)."""

    polarity: str | None
    values: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Sentence:
    """One sentence of a statement, its clauses (in order) and the decades it names."""

    text: str
    clauses: tuple[Clause, ...]
    decades: tuple[int, ...]
    no_preference: bool

    def values(self, polarity: str | None) -> tuple[str, ...]:
        return tuple(v for c in self.clauses if c.polarity == polarity for v in c.values)


@dataclass(frozen=True)
class ParsedStatement:
    """What a statement says, values in the vocabulary's spelling, in order of first appearance.

    ``likes`` / ``dislikes`` may share a value (that is a contradiction, see :func:`contradictions`);
    ``mentioned`` are values named with no polarity; ``no_preference`` is set when it says it has none.
    """

    likes: tuple[str, ...]
    dislikes: tuple[str, ...]
    decades: tuple[int, ...]
    mentioned: tuple[str, ...] = ()
    no_preference: bool = False
    sentences: tuple[Sentence, ...] = ()


def _unique(values: Iterable) -> tuple:
    return tuple(dict.fromkeys(values))


def _value_pattern(vocabulary: Sequence[str]) -> re.Pattern[str] | None:
    """One regex over the vocabulary, longest value first ("Film-Noir" before "Film"), case-insensitive,
    whole words only (a hyphen or apostrophe counts as part of a word), an optional plural "s"."""
    words = sorted({v for v in vocabulary if v.strip()}, key=len, reverse=True)
    if not words:
        return None
    # "Film-Noir" also reads as "film noir" or "filmnoir".
    alternatives = "|".join(re.escape(w).replace(r"\-", r"[-\s]?") for w in words)
    return re.compile(rf"(?<![\w'-])({alternatives})(?:s|es)?(?![\w'-])", re.IGNORECASE)


def _norm(value: str) -> str:
    return re.sub(r"[-\s]", "", value.lower())


def _canonical(vocabulary: Sequence[str]) -> dict[str, str]:
    return {_norm(v): v for v in vocabulary}


def _key(match: re.Match[str]) -> str:
    return _norm(match.group(1))


def _cue_polarity(match: re.Match[str], sentence: str, until: int) -> str | None:
    kind = match.lastgroup or ""
    if kind.startswith("dislike"):
        return DISLIKE
    if kind.startswith("like"):
        return LIKE
    rest = sentence[match.end(): until]  # a "rate" clause: low or high decides
    if _LOW_WORDS.search(rest):
        return DISLIKE
    if _HIGH_WORDS.search(rest):
        return LIKE
    return None


def _parse_sentence(text: str, values: re.Pattern[str] | None, canonical: dict[str, str]) -> Sentence:
    cues = list(_CUES.finditer(text))
    bounds = [(0, None)] + [(m.start(), m) for m in cues]
    clauses = []
    for n, (start, cue) in enumerate(bounds):
        end = bounds[n + 1][0] if n + 1 < len(bounds) else len(text)
        if cue is None and end == 0:
            continue
        polarity = _cue_polarity(cue, text, end) if cue is not None else None
        found = [] if values is None else [canonical[_key(m)] for m in values.finditer(text, start, end)]
        clauses.append(Clause(polarity, tuple(found), start, end))
    decades = tuple(int(m.group(1) + m.group(2) + "0") for m in _DECADE.finditer(text))
    return Sentence(text, tuple(clauses), decades, bool(_NO_PREFERENCE.search(text)))


def split_sentences(text: str) -> list[str]:
    """The statement's sentences, whitespace normalised (a last sentence without a full stop is kept)."""
    text = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(text) if s]


def complete_sentences(text: str) -> str:
    """One line, cut after the last complete sentence (generation stops at a token budget, often mid-sentence);
    text with no sentence end is kept whole."""
    text = " ".join(text.split())
    end = max(text.rfind("."), text.rfind("!"), text.rfind("?"))
    return text[: end + 1] if end > 0 else text


def parse_statement(text: str, vocabulary: Sequence[str]) -> ParsedStatement:
    """Parse a preference statement.

    Args:
        text: The statement, e.g. "Enjoys comedy and drama films, mostly from the 1990s. Tends to rate horror low."
        vocabulary: The attribute values the catalog uses (e.g. its genres), any case.

    Returns:
        The liked, disliked and merely mentioned values (spelled as in ``vocabulary``), the decades named, and
        whether it says it has no preferences.
    """
    pattern, canonical = _value_pattern(vocabulary), _canonical(vocabulary)
    sentences = tuple(_parse_sentence(s, pattern, canonical) for s in split_sentences(text))
    return ParsedStatement(
        likes=_unique(v for s in sentences for v in s.values(LIKE)),
        dislikes=_unique(v for s in sentences for v in s.values(DISLIKE)),
        decades=_unique(d for s in sentences for d in s.decades),
        mentioned=_unique(v for s in sentences for v in s.values(None)),
        no_preference=any(s.no_preference for s in sentences),
        sentences=sentences,
    )


def contradictions(parsed: ParsedStatement) -> list[str]:
    """Ways the statement contradicts itself, one line each (empty when it is coherent).

    * a value both liked and disliked ("Enjoys comedy ... Tends to rate comedy low.");
    * "no clear preferences" next to named likes or dislikes.
    """
    problems = [f"{value!r} is both liked and disliked" for value in parsed.likes if value in parsed.dislikes]
    if parsed.no_preference and (parsed.likes or parsed.dislikes):
        problems.append("says it has no clear preferences but names some")
    return problems


def repetitions(parsed: ParsedStatement) -> list[str]:
    """Values or decades named twice in one list ("musical and musical", "the 1990s and 1990s"): not a
    contradiction, but a degenerate statement the generator writes at times."""
    problems = []
    for sentence in parsed.sentences:
        for clause in sentence.clauses:
            problems += [f"{v!r} repeated in one list" for v in _unique(clause.values) if clause.values.count(v) > 1]
        problems += [f"the {d}s repeated" for d in _unique(sentence.decades) if sentence.decades.count(d) > 1]
    return problems


# "the 1990s and 1990s" / "the 1990s, the 1990s" -> "the 1990s".
_REPEATED_DECADE = re.compile(r"\b((?:1[0-9]|20)[0-9]0'?s)(?:(?:,\s*|,?\s+and\s+)(?:the\s+)?\1\b)+", re.IGNORECASE)


def _join_like(surface: list[str], separators: list[str]) -> str:
    """Rejoin a list of values in the separators' style ("a, b and c"); ", " between, " and " before the last."""
    if len(surface) == 1:
        return surface[0]
    last = next((s for s in reversed(separators) if s.strip().lower() in ("and", "or", ", and", ", or")), " and ")
    return ", ".join(surface[:-1]) + last + surface[-1]


def _drop_values(sentence: str, clause: Clause, drop: set[str], values: re.Pattern[str],
                 canonical: dict[str, str]) -> str | None:
    """The sentence with ``drop`` removed from the clause's list of values; None when the clause names nothing
    else (the clause, and the sentence if it is all there is, goes).

    The list is the span from the clause's first value to its last; it is rebuilt from the values kept, in
    their own spelling, so "Tends to rate comedy and horror low." becomes "Tends to rate horror low."."""
    matches = list(values.finditer(sentence, clause.start, clause.end))
    kept = [m for m in matches if canonical[_key(m)] not in drop]
    # Repeated values in one list are dropped too ("drama, drama and comedy").
    kept = list({canonical[_key(m)]: m for m in reversed(kept)}.values())[::-1]
    if not kept:
        return None
    separators = [sentence[a.end(): b.start()] for a, b in zip(matches, matches[1:])]
    span = _join_like([m.group(0) for m in kept], separators)
    return sentence[: matches[0].start()] + span + sentence[matches[-1].end():]


def clean_statement(text: str, vocabulary: Sequence[str]) -> str | None:
    """A version of ``text`` that does not contradict itself, or None when nothing coherent is left.

    A coherent statement comes back unchanged (whitespace normalised). Otherwise, following the teacher's
    definition (a disliked value is one the user never liked, so the like wins):

    * a value both liked and disliked is removed from the dislike clauses; a dislike clause left with no value
      goes, and with it its sentence when that clause was the sentence's only content;
    * "no clear preferences" sentences go when the statement names preferences;
    * a value or decade repeated in one list is named once (:func:`repetitions`).

    Args:
        text: The generated statement (already cut to whole sentences).
        vocabulary: The attribute values the catalog uses (e.g. its genres).

    Returns:
        The statement to serve, or None when it is empty or nothing coherent remains.
    """
    parsed = parse_statement(text, vocabulary)
    if not parsed.sentences:
        return None
    if not contradictions(parsed) and not repetitions(parsed):
        return " ".join(s.text for s in parsed.sentences)
    pattern, canonical = _value_pattern(vocabulary), _canonical(vocabulary)
    conflicted = {v for v in parsed.likes if v in parsed.dislikes}
    names_preferences = bool(parsed.likes or parsed.dislikes)
    out = []
    for sentence in parsed.sentences:
        if sentence.no_preference and names_preferences and not (sentence.values(LIKE) or sentence.values(DISLIKE)):
            continue
        text_now: str | None = sentence.text
        # Right to left, so the clause offsets stay valid as the text before them is unchanged.
        for clause in reversed(sentence.clauses):
            conflicting = clause.polarity == DISLIKE and bool(conflicted & set(clause.values))
            repeated = len(set(clause.values)) < len(clause.values)
            if text_now is None or not (conflicting or repeated):
                continue
            edited = _drop_values(text_now, clause, conflicted if conflicting else set(), pattern, canonical)
            if edited is None:
                text_now = _drop_clause(text_now, clause, sentence)
            else:
                text_now = edited
        if text_now:
            out.append(_REPEATED_DECADE.sub(r"\1", text_now))
    cleaned = " ".join(out)
    if not cleaned or contradictions(check := parse_statement(cleaned, vocabulary)) or repetitions(check):
        return None
    return cleaned


def _drop_clause(text: str, clause: Clause, sentence: Sentence) -> str | None:
    """The sentence without ``clause``; None when nothing with content is left."""
    others = [c for c in sentence.clauses if c is not clause and (c.values or c.polarity is not None)]
    if not others:
        return None
    head = text[: clause.start].rstrip(" ,;")
    # Drop a conjunction left dangling at the cut ("Enjoys drama but tends to rate comedy low.").
    head = re.sub(r"(?:,?\s+(?:but|and|while|though|although|yet))+$", "", head, flags=re.IGNORECASE)
    tail = text[clause.end:]
    ending = tail if tail.strip() else text[-1] if text[-1] in ".!?" else ""
    out = (head.rstrip() + ending).strip() if head.strip() else tail.strip()
    return out[:1].upper() + out[1:] if out else None
