"""Rejections the tagger misses: a value it reads as wanted although the words around it turn it down.

The tagger learns negation from its training families; wording none of them uses is where it reads an exclusion as
a wish, the worst error a reader can make (the answer is then made of what the caller excluded). Two kinds of
wording are common enough to list, both small classes of everyday English and nothing about a catalog:

* a dismissal after the value, at the end of its clause: "horror is a no-go", "the 60s: not interested",
  "cartoons - not tonight", "musicals? I'll pass" (:data:`AFTER`);
* a turn-down before it: "not in the mood for heist", "I'm over kids' films", "zero romance", "steer clear of
  musicals" (:data:`BEFORE`), unless a negation before that makes it a double one ("I wouldn't say no to a
  western").

The opposite error has a safe test: a value the tagger excludes with no word of refusal anywhere around it ("a
mystery with a bit of romance", "craving space opera tonight") is wanted (:func:`unsupported_exclusions`). The
words that count as a refusal (:data:`REFUSAL_WORDS`) are many on purpose: one of them anywhere near keeps the
exclusion, because reading an exclusion as a wish is the worse error.

A rejected span becomes an exclusion (a value) or its complement (a quantity: in -> not in, before -> from on), and
so do the spans listed with it by "and" / "or" ("horror and musicals are out"). Spans the tagger already excludes
are left alone; the phrases' words are returned so that they leave the residual text.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import TypeVar

from services.core.lexicon import normalise
from services.core.roles import ALT, GE, GT, IN, LE, LT, NOT, NOTIN, VALUE_ROLES, WANT

S = TypeVar("S")


def _phrases(*texts: str) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(normalise(t).split()) for t in texts)


AFTER = _phrases(
    "out", "excluded", "banned", "forbidden", "a no", "a no-go", "a nogo", "a hard no", "a big no", "a pass",
    "a hard pass", "hard pass", "pass", "i'll pass", "i will pass", "i'd pass", "i'll skip", "skip", "off the table",
    "off limits", "off-limits", "a dealbreaker", "a deal breaker", "a deal-breaker", "not for me", "not my thing",
    "not my cup of tea", "not an option", "out of the question", "not interested", "no thanks", "no thank you",
    "not tonight", "not today", "not now", "not this time", "not again", "no way", "nope", "please no", "no please",
    "dead to me", "not welcome", "not allowed", "need not apply", "can wait", "can stay away",
    "a non starter", "a nonstarter", "not happening", "not in the mood", "not feeling it", "not for us",
    "not for tonight", "nah", "not so much", "dont bother", "do not bother", "isnt my thing", "arent my thing",
    "isnt for me", "arent for me", "a big fat no", "a miss", "bores me", "bore me", "none of that", "isnt", "arent",
    "no", "bores me to tears", "bore me to tears", "leaves me cold", "leave me cold", "i can do without",
    "i could do without", "can do without", "could do without", "i could never sit through", "i can never sit through",
    "i cant sit through", "could never sit through", "cant sit through", "neither appeals", "neither appeal",
    "doesnt do it for me", "dont do it for me", "does nothing for me", "do nothing for me",
)
"""Dismissals that follow what they dismiss, after "is"/"are", a colon, a dash or a question mark."""

BEFORE = _phrases(
    "not in the mood for", "not really in the mood for", "in no mood for", "not keen on", "not big on",
    "not a big fan of", "no fan of", "not fond of", "not into", "not feeling", "not interested in",
    "no interest in", "im over", "i am over", "done with", "im done with", "enough of", "enough with",
    "zero", "no more", "sick of", "tired of", "fed up with", "bored of", "bored with", "pass on", "ill pass on",
    "hold the", "spare me", "save me from", "keep away from", "stay away from", "steer clear of", "stay clear of",
    "avoid", "avoiding", "apart from", "aside from", "other than", "except for", "barring", "minus", "sans",
    "cant stand", "cant do", "dont do", "wont watch", "hate", "dislike", "loathe", "no to", "say no to",
    "leave out", "leave off", "cut the", "drop the", "ditch the", "lose the", "allergic to", "not a fan of",
    "anything but", "everything but", "nothing", "no", "not", "never", "without", "skip", "exclude", "excluding",
    "so over", "im so over", "hard pass on", "dont suggest", "dont you dare suggest", "dont recommend",
    "dont show me", "dont give me",
)
"""Turn-downs that stand before what they turn down."""

_NEGATIONS = frozenset({"not", "no", "never", "nt", "dont", "didnt", "doesnt", "wouldnt", "couldnt", "cant", "wont",
                        "isnt", "arent", "shouldnt", "nothing"})
_LEAD = frozenset({"is", "are", "s", "re", "was", "were", "just", "totally", "definitely", "really", "so",
                   "honestly", "im", "am", "tbh", "thats", "its", "though", "stuff", "ones", "films", "movies",
                   "releases", "titles", "flicks", "both", "all", "gets", "get"})
"""Words that may stand between a value and a dismissal after it ("musicals are really not for me")."""
_MARKS = frozenset({":", "-", ",", "?", "!", "...", "."})
_DETERMINERS = frozenset({"the", "a", "an", "any", "all", "that", "those", "these", "more"})
"""Words that may stand between a turn-down and its value ("sick of the musicals")."""
_AFTER_PHRASE_STOPS = frozenset({"to", "of", "than", "with", "about", "on", "in", "from"})
"""A dismissal followed by one of these is part of something longer ("out of the 90s", "pass on westerns")."""
_AT_CLAUSE_END = _phrases("no", "isnt", "arent", "please no", "no please", "none of that", "nope", "nah",
                          "no way", "not again", "not now")
"""Dismissals that count only at the end of a clause ("horror no, comedy yes"; not "horror no matter what")."""
_TAILS = _phrases("thanks", "thank you", "thx", "ty", "ta", "pls", "plz", "please", "cheers", "lol", "x", "xx",
                  "if you can", "if possible", "much appreciated", "for now", "tonight", "today", "from me", "for me",
                  "thanks in advance")
"""Polite or casual tails that may follow a dismissal at the end of its clause ("animation - nope, if you can")."""
REFUSAL_WORDS = frozenset({
    "not", "no", "nothing", "none", "never", "nt", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent",
    "wont", "cant", "couldnt", "wouldnt", "shouldnt", "neither", "nor", "without", "except", "excluding", "exclude",
    "excluded", "but", "skip", "avoid", "hate", "hates", "minus", "sans", "less", "other", "than", "instead",
    "rather", "off", "out", "pass", "nah", "nope", "nay", "miss", "bother", "zero", "ugh", "yuck", "ew", "eww",
    "meh", "ick", "gross", "cringe", "yawn", "bar", "barring", "aside", "apart", "spare", "keep", "hold", "ditch",
    "drop", "lose", "cut", "leave", "away", "clear", "steer", "over", "done", "enough", "sick", "tired", "fed",
    "bored", "bores", "boring", "stand", "dislike", "loathe", "allergic", "refuse", "ban", "banned", "forbidden",
    "anti", "free", "limits", "dealbreaker", "nonstarter", "worst", "hard", "dare", "stop", "quit", "too", "stay",
    "wait", "dead", "shelf", "beyond", "save", "lay", "sworn", "against", "exclusion",
})
"""Words of refusal: an exclusion the tagger read with none of them near it is no exclusion (see the module)."""
_CONJUNCTIONS = frozenset({"and", "or", "nor", "/", "&"})
_LIST = _CONJUNCTIONS | {"a", "an", "the"}
_COMPLEMENT = {WANT: NOT, ALT: NOT, IN: NOTIN, LT: GE, LE: GT, GT: LE, GE: LT}
_LONGEST = max(len(p) for p in (*AFTER, *BEFORE))


def rejected_roles(words: Sequence[str], spans: Sequence[S], directed: Collection[int] = ()
                   ) -> tuple[list[S], set[int]]:
    """``spans`` (with ``role``, ``start``, ``end``) with the rejected ones turned round, and the phrases' word
    indices. Only a span read as wanted changes: a value to excluded; a quantity to not in it, or to the
    complement of its bound when direction words set it (``directed``: those spans' starts; without them the
    tagger's direction is a guess: "1960: not interested" is no bound)."""
    tokens, owner = _tokens(words)
    out = list(spans)
    cues: set[int] = set()
    for n, span in enumerate(out):
        if span.role not in _COMPLEMENT:
            continue
        left = out[n - 1].end if n else 0
        right = out[n + 1].start if n + 1 < len(out) else len(words)
        found = _after(tokens, owner, span.end, right) or _before(tokens, owner, span.start, left)
        if found is None:
            continue
        cues.update(found)
        role = _COMPLEMENT[span.role] if span.role in (WANT, ALT, IN) or span.start in directed else NOTIN
        out[n] = replace(span, role=role)
    return _listed_refusals(words, tokens, owner, out), cues


def _listed_refusals(words: Sequence[str], tokens: list[str], owner: list[int], spans: list[S]) -> list[S]:
    """A list shares its refusal, whoever read the refused value (the tagger or the phrases above): the values
    listed before a value with a dismissal after it ("horror, musicals and westerns are out", "fantasy and scare
    are both off the table"), and those listed after a value with a turn-down before it ("steer clear of
    fantasies, thrillers and westerns"; there the list needs an "and" / "or", so that "no horror, comedy please"
    keeps its comedy)."""
    out = list(spans)

    def around(n: int) -> tuple[int, int]:
        return (out[n - 1].end if n else 0), (out[n + 1].start if n + 1 < len(out) else len(words))

    def refuse(run: range) -> None:
        for k in run:
            if out[k].role in (WANT, ALT):
                out[k] = replace(out[k], role=NOT)

    for n in range(len(out)):
        if out[n].role != NOT:
            continue
        first = n  # the values listed before it
        while first > 0 and out[first - 1].role in VALUE_ROLES and _listed(words, out[first - 1], out[first], False):
            first -= 1
        if first < n and _after(tokens, owner, out[n].end, around(n)[1]) is not None:
            refuse(range(first, n))
        last = n  # the values listed after it
        while last + 1 < len(out) and out[last + 1].role in VALUE_ROLES and _listed(words, out[last], out[last + 1],
                                                                                    False):
            last += 1
        if (any(_listed(words, out[k], out[k + 1], True) for k in range(n, last))
                and _before(tokens, owner, out[n].start, around(n)[0]) is not None):
            refuse(range(n + 1, last + 1))
    return out


def _listed(words: Sequence[str], first, second, conjunction: bool) -> bool:
    """Whether two spans are listed together: only list words or a comma between them (not both: ", and" opens a
    clause), with "and" / "or" / "nor" among them when ``conjunction``."""
    between = [normalise(w) or w for w in words[first.end:second.start]]
    joined = set(between) & _CONJUNCTIONS
    return (bool(between) and all(w in _LIST or w == "," for w in between) and (not conjunction or bool(joined))
            and not ("," in between and joined))  # "detective, and documentaries? I'll pass": a clause of its own


def _tokens(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """The normalised tokens of ``words`` ("I'll" -> "ill", "no-go" -> "no", "go"; a mark stays itself) and the
    index of the word each came from."""
    tokens, owner = [], []
    for n, word in enumerate(words):
        for token in normalise(word).split() or [word]:
            tokens.append(token)
            owner.append(n)
    return tokens, owner


def _at(owner: Sequence[int], word: int) -> int:
    """The first token of word ``word`` (len(owner) past the end)."""
    return next((t for t, w in enumerate(owner) if w >= word), len(owner))


def _after(tokens: list[str], owner: list[int], end: int, limit: int) -> set[int] | None:
    t, stop = _at(owner, end), _at(owner, limit)
    while t < stop and (tokens[t] in _LEAD or tokens[t] in _MARKS):
        t += 1
    for length in range(min(_LONGEST, stop - t), 0, -1):
        phrase = tuple(tokens[t:t + length])
        following = tokens[t + length] if t + length < len(tokens) else ""
        if phrase in AFTER and (_clause_ends(tokens, t + length) or (phrase not in _AT_CLAUSE_END
                                                                     and following not in _AFTER_PHRASE_STOPS)):
            return {owner[k] for k in range(t, t + length)}
    return None


def _clause_ends(tokens: Sequence[str], position: int) -> bool:
    """Whether the clause ends at ``position``: the end, a mark, or a polite tail (:data:`_TAILS`) then one of those."""
    if position >= len(tokens) or tokens[position] in _MARKS:
        return True
    for tail in _TAILS:
        end = position + len(tail)
        if tuple(tokens[position:end]) == tail and (end >= len(tokens) or tokens[end] in _MARKS):
            return True
    return False


def _before(tokens: list[str], owner: list[int], start: int, limit: int) -> set[int] | None:
    t, floor = _at(owner, start), _at(owner, limit)
    while t > floor and tokens[t - 1] in _DETERMINERS:
        t -= 1
    for length in range(min(_LONGEST, t - floor), 0, -1):
        phrase = tuple(tokens[t - length:t])
        if phrase not in BEFORE:
            continue
        first = t - length
        # A negation just before the turn-down makes a double one ("wouldn't say no to", "not without").
        if any(tok in _NEGATIONS for tok in tokens[max(floor, first - 3):first]):
            return None
        return {owner[k] for k in range(first, t)}
    return None


def unsupported_exclusions(words: Sequence[str], spans: Sequence[S]) -> list[S]:
    """``spans`` with each excluded value that has no refusal word (:data:`REFUSAL_WORDS`) near it made wanted:
    near is between the starts and ends of the spans around it, and a list of exclusions ("no horror, comedy or
    drama", "romance and action are both off the table") counts as one."""
    out = list(spans)
    supported = []
    for n in range(len(out)):
        # The words of the spans around it count too (the tagger sometimes labels "is a no" a span of its own).
        left = out[n - 1].start if n else 0
        right = out[n + 1].end if n + 1 < len(out) else len(words)
        supported.append(bool({t for w in words[left:right] for t in normalise(w).split()} & REFUSAL_WORDS))
    n = 0
    while n < len(out):
        if out[n].role != NOT:
            n += 1
            continue
        m = n + 1  # the exclusions listed with it
        while m < len(out) and out[m].role == NOT and all(
                normalise(w) in _LIST or w in _MARKS for w in words[out[m - 1].end:out[m].start]):
            m += 1
        if not any(supported[n:m]):
            out[n:m] = [replace(span, role=WANT) for span in out[n:m]]
        n = m
    return out
