"""Sentiment of English sentences in four domains, rated by people: the VADER data set, from the
`vaderSentiment` sdist on PyPI.

Hutto & Gilbert (2014), "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media
Text" (ICWSM), collected about 20 human ratings per sentence on a -4..+4 scale for tweets, movie-review
snippets, product-review snippets and New York Times editorial snippets; the sdist (vaderSentiment 3.3.2,
MIT licence) carries them in additional_resources/hutto_ICWSM_2014.tar.gz, one `<id>\\t<mean>\\t<text>`
file per domain. We fetch the sdist once (fedmkt.data.sdist), keep the four files in the fedmkt cache and
ask each sentence as a three-way multiple-choice question: negative (mean below -0.5), neutral (within
+-0.5) or positive. The domains differ in text and in label shares (editorials are half neutral, movie
snippets almost never), which makes them natural non-IID clients.
"""

from __future__ import annotations

import html
import io
import tarfile
from functools import lru_cache
from pathlib import Path

from fedmkt.data.questions import Question
from fedmkt.data.sdist import sdist_archive
from fedmkt.files import atomic_write_bytes
from fedmkt.models import cache_root

VERSION = "3.3.2"
VARIABLE = "FEDMKT_VADER_SDIST"
_INNER = f"vaderSentiment-{VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
# domain -> (the file in the inner archive, what the question calls the text)
FILES: dict[str, tuple[str, str]] = {
    "vader/tweets": ("tweets_GroundTruth.txt", "Tweet"),
    "vader/movie_reviews": ("movieReviewSnippets_GroundTruth.txt", "Movie review"),
    "vader/product_reviews": ("amazonReviewSnippets_GroundTruth.txt", "Product review"),
    "vader/editorials": ("nytEditorialSnippets_GroundTruth.txt", "Newspaper editorial"),
}
DOMAINS = tuple(FILES)
LABELS = ("negative", "neutral", "positive")
NEUTRAL_BAND = 0.5  # |mean rating| at most this: neutral
_UID_BASE = 2 * 10**11  # above BIG-bench's task-hashed uids (< 1.01e11), below own files' (2^40)


def _cached(domain: str) -> Path:
    return cache_root() / "vader" / VERSION / FILES[domain][0]


def ensure_files() -> dict[str, Path]:
    """The four rating files in the cache, extracted from the sdist the first time."""
    if not all(_cached(d).is_file() for d in DOMAINS):
        with sdist_archive("vaderSentiment", VERSION, VARIABLE) as archive:
            with tarfile.open(archive, "r:gz") as sdist:
                try:
                    inner = sdist.extractfile(_INNER).read()
                except KeyError:
                    raise FileNotFoundError(f"{archive} holds no {_INNER}: not the vaderSentiment {VERSION} sdist") from None
        wanted = {f"hutto_ICWSM_2014/{name}": domain for domain, (name, _) in FILES.items()}
        with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as data:
            for member in data:
                domain = wanted.pop(member.name, None)
                if domain is not None:
                    atomic_write_bytes(_cached(domain), data.extractfile(member).read())
        if wanted:
            raise FileNotFoundError(f"the vaderSentiment {VERSION} sdist lacks {sorted(wanted)}")
    return {d: _cached(d) for d in DOMAINS}


def label(mean_rating: float) -> int:
    """The index in LABELS of a sentence's mean human rating."""
    if mean_rating < -NEUTRAL_BAND:
        return 0
    return 1 if mean_rating <= NEUTRAL_BAND else 2


def parse_ratings(domain: str, text: str) -> list[Question]:
    """One domain's `<id>\\t<mean rating>\\t<sentence>` lines as questions (a line that does not parse is skipped)."""
    what = FILES[domain][1]
    offset = _UID_BASE + DOMAINS.index(domain) * 10**6
    questions = []
    for index, line in enumerate(text.splitlines()):
        parts = line.strip().split("\t")
        if len(parts) != 3 or not parts[2].strip():
            continue
        try:
            rating = float(parts[1])
        except ValueError:
            continue
        sentence = " ".join(html.unescape(parts[2]).replace("''", '"').split())  # tweets keep "&amp;"
        questions.append(Question(
            uid=offset + index, domain=domain, subject=domain,
            question=f"{what}: {sentence}\nIs its sentiment negative, neutral or positive?",
            choices=LABELS, answer=label(rating)))
    return questions


@lru_cache(maxsize=1)
def _all() -> tuple[Question, ...]:
    paths = ensure_files()
    return tuple(q for d in DOMAINS for q in parse_ratings(d, paths[d].read_text(encoding="utf-8", errors="replace")))


def load_vader(domains: list[str] | None = None) -> list[Question]:
    """The questions of the named domains (all four by default)."""
    wanted = set(domains or DOMAINS)
    return [q for q in _all() if q.domain in wanted]
