"""BIG-bench tasks, VADER's rated sentences and OpenAI Evals' free-text tasks from sdist-shaped archives,
free-text questions and ROUGE-L."""

import io
import json
import tarfile

import pytest

from fedmkt.data import bigbench, openai_evals, vader
from fedmkt.data.prompts import answer_text, prompt_text
from fedmkt.config import parse_config
from fedmkt.data.sdist import SdistUnavailable
from fedmkt.data.splits import federated_split
from fedmkt.evaluation import evaluate_questions, rouge_l, rouge_tokens

MC = {"name": "mc", "examples": [
    {"input": "How many legs do horses have?", "target_scores": {"four": 1, "two": 0, "six": 0}},
    {"input": "Two right answers", "target_scores": {"a": 1, "b": 1}},  # no single answer: skipped
    {"input": "Pick the colour of snow.", "target_scores": {"white": 1, "black": 0, "green": 0, "red": 0}}]}
FREE = {"name": "gen", "task_prefix": "Rewrite in capitals. ", "examples": [
    {"input": "cat", "target": "CAT"}, {"input": "dog", "target": ["DOG", "Dog"]}]}


def fake_sdist(path, tasks):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in tasks.items():
            blob = json.dumps(data).encode()
            info = tarfile.TarInfo(f"bigbench-{bigbench.VERSION}/bigbench/benchmark_tasks/{name}/task.json")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))


@pytest.fixture
def sdist(tmp_path, monkeypatch):
    archive = tmp_path / "bigbench.tar.gz"
    fake_sdist(archive, {"mc": MC, "natural_instructions/sub1": FREE, "unused": MC})
    monkeypatch.setenv("FEDMKT_BIGBENCH_SDIST", str(archive))
    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path / "cache"))
    return archive


def test_only_the_named_tasks_are_extracted_and_parsed(sdist, tmp_path):
    questions = bigbench.load_bigbench(["mc", "natural_instructions/sub1"])
    cached = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("task.json"))
    assert cached == [f"bigbench/{bigbench.VERSION}/mc/task.json",
                      f"bigbench/{bigbench.VERSION}/natural_instructions/sub1/task.json"]
    mc = [q for q in questions if q.domain == "mc"]
    assert len(mc) == 2 and all(not q.free_text for q in mc)
    assert [q.choices[q.answer] for q in mc] == ["four", "white"]
    free = [q for q in questions if q.domain == "natural_instructions/sub1"]
    assert [q.references for q in free] == [("CAT",), ("DOG", "Dog")]
    assert prompt_text(free[0]) == "Rewrite in capitals. cat\nAnswer:" and answer_text(free[0]) == " CAT"
    assert len({q.uid for q in questions}) == len(questions)
    sdist.unlink()  # later loads come from the cache
    assert [q.uid for q in bigbench.load_bigbench(["mc"])] == [q.uid for q in mc]


def test_unknown_task_is_named(sdist):
    with pytest.raises(FileNotFoundError, match="no_such_task"):
        bigbench.load_bigbench(["no_such_task"])


def test_choice_order_is_shuffled_but_fixed():
    many = {"examples": [{"input": f"q{i}", "target_scores": {"right": 1, "w1": 0, "w2": 0, "w3": 0}}
                         for i in range(40)]}
    first = bigbench.parse_task("t", many)
    assert len({q.answer for q in first}) > 1  # the right answer does not always sit first
    assert [q.choices for q in bigbench.parse_task("t", many)] == [q.choices for q in first]


def test_rouge_l_is_lcs_f1_over_words():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("", "x") == 0.0 and rouge_l("dog", "cat") == 0.0
    # LCS("the big cat", "the cat") = 2: P = 2/3, R = 1, F = 0.8
    assert rouge_l("The big CAT!", "the cat") == pytest.approx(0.8)


def test_mixed_split_and_free_text_evaluation(sdist, mmlu, smol_tok):
    from fedmkt.config import ModelSpec
    from fedmkt.models import load_model

    questions = mmlu + bigbench.load_bigbench(["mc", "natural_instructions/sub1"])
    config = parse_config({"clients": [{"name": "a", "domains": ["stem"]}],
                           "data": {"public_size": 6, "private_size": 4, "eval_size": 1, "eval_domains": ["mc", "natural_instructions/sub1"],
                                    "bigbench_tasks": ["mc", "natural_instructions/sub1"]}})
    split = federated_split(config, presets=questions)
    assert {q.domain for q in split.public} >= {"stem", "humanities"}
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"))
    free = evaluate_questions(loaded.model, loaded.tokenizer, split.evaluation["natural_instructions/sub1"], 64, 2)
    assert set(free) == {"rougeL", "exact_match", "ended", "n", "per_question", "answers"} and 0.0 <= free["rougeL"] <= 1.0
    assert len(free["answers"]) == free["n"]
    assert free["rougeL"] == pytest.approx(sum(free["per_question"]) / free["n"])
    mc = evaluate_questions(loaded.model, loaded.tokenizer, split.evaluation["mc"], 64, 2)
    assert mc["n"] == 1 and mc["acc"] in (0.0, 1.0)


@pytest.mark.slow
def test_real_bigbench_tasks_from_pypi():
    try:
        questions = bigbench.load_bigbench(["social_iqa", "general_knowledge", "multiemo/hotels_sentence_en"])
    except SdistUnavailable as error:  # PyPI stopped serving bigbench 1.0.0 in December 2026
        if "No matching distribution" not in str(error):
            raise
        pytest.skip(f"the bigbench {bigbench.VERSION} sdist is not on the package index: {error}")
    sentiment = [q for q in questions if q.domain == "multiemo/hotels_sentence_en"]
    assert len(sentiment) > 2000 and {len(q.choices) for q in sentiment} == {4}
    social = [q for q in questions if q.domain == "social_iqa"]
    assert len(social) > 1500 and all(2 <= len(q.choices) and 0 <= q.answer < len(q.choices) for q in social)
    assert sum(len(q.choices) == 3 for q in social) > 0.9 * len(social)
    assert 50 < sum(q.domain == "general_knowledge" for q in questions) <= 70


def _vader_sdist(path, files: dict[str, str]):
    """A vaderSentiment-shaped sdist: the rating files inside additional_resources/hutto_ICWSM_2014.tar.gz."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as data:
        for name, text in files.items():
            blob = text.encode()
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{name}")
            info.size = len(blob)
            data.addfile(info, io.BytesIO(blob))
    with tarfile.open(path, "w:gz") as sdist:
        info = tarfile.TarInfo(f"vaderSentiment-{vader.VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(inner.getvalue())
        sdist.addfile(info, io.BytesIO(inner.getvalue()))
    return path


def test_vader_sentences_become_three_way_sentiment_questions(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path / "cache"))
    files = {name: "" for name, _ in vader.FILES.values()}
    files["tweets_GroundTruth.txt"] = ("1\t2.7\tSo lucky &amp; happy.\r\n2\t-0.5\tmeh\r\n3\t0.51\tok then\r\n"
                                       "4\tnot-a-number\tskipped\r\n5\t-3.1\t\r\n6\t-0.51\tawful\r\n")
    files["movieReviewSnippets_GroundTruth.txt"] = "1\t-2.0\tA ''classic'' bore.\n"
    monkeypatch.setenv(vader.VARIABLE, str(_vader_sdist(tmp_path / "vader.tar.gz", files)))
    vader._all.cache_clear()
    questions = vader.load_vader(["vader/tweets", "vader/movie_reviews"])
    tweets = [q for q in questions if q.domain == "vader/tweets"]
    # Lines that do not parse (a rating that is no number, no text) are skipped; the band is +-0.5 inclusive.
    assert [(q.choices[q.answer], q.question.splitlines()[0]) for q in tweets] == [
        ("positive", "Tweet: So lucky & happy."), ("neutral", "Tweet: meh"), ("positive", "Tweet: ok then"),
        ("negative", "Tweet: awful")]
    movie = next(q for q in questions if q.domain == "vader/movie_reviews")
    assert movie.question.startswith('Movie review: A "classic" bore.') and movie.choices[movie.answer] == "negative"
    uids = [q.uid for q in questions]
    assert len(set(uids)) == len(uids) and all(2 * 10**11 <= u < 1 << 40 for u in uids)
    assert (tmp_path / "cache" / "vader" / vader.VERSION / "tweets_GroundTruth.txt").is_file()
    monkeypatch.setenv(vader.VARIABLE, str(tmp_path / "gone.tar.gz"))  # cached now: the archive is not read again
    vader._all.cache_clear()
    assert [q.uid for q in vader.load_vader(["vader/tweets"])] == [q.uid for q in tweets]
    vader._all.cache_clear()


def test_a_missing_sdist_is_named_with_the_variable_that_supplies_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(vader.VARIABLE, str(tmp_path / "nowhere.tar.gz"))
    vader._all.cache_clear()
    with pytest.raises(SdistUnavailable, match="FEDMKT_VADER_SDIST names .*nowhere.tar.gz, which is not a file"):
        vader.load_vader()
    vader._all.cache_clear()


@pytest.mark.slow
def test_real_vader_sentences_from_pypi():
    questions = vader.load_vader()
    counts = {d: sum(q.domain == d for q in questions) for d in vader.DOMAINS}
    assert counts == {"vader/tweets": 4200, "vader/movie_reviews": 10605, "vader/product_reviews": 3708,
                      "vader/editorials": 5190}
    movie = [q.answer for q in questions if q.domain == "vader/movie_reviews"]
    assert 0.4 < movie.count(0) / len(movie) < 0.55 and movie.count(1) / len(movie) < 0.1  # few neutral snippets


def _evals_sdist(path, samples: dict[str, list]):
    """An evals-shaped sdist: each task's samples.jsonl under evals/registry/data/<task>/."""
    with tarfile.open(path, "w:gz") as sdist:
        for task, rows in samples.items():
            blob = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()
            info = tarfile.TarInfo(f"evals-{openai_evals.VERSION}/evals/registry/data/{task}/samples.jsonl")
            info.size = len(blob)
            sdist.addfile(info, io.BytesIO(blob))
    return path


def _sample(text: str, ideal) -> dict:
    return {"input": [{"role": "system", "content": "Write a title for this abstract."},
                      {"role": "user", "content": text}], "ideal": ideal}


LONG = "A fluorinated polythiophene hole transport material for efficient and stable perovskite solar cells"


@pytest.fixture
def evals_sdist(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path / "cache"))
    rows = [_sample("first abstract", LONG),
            _sample("short reference", "Solar cells, better ones"),  # 4 tokens: under the paper's 11, dropped
            "not json",
            {"input": "no turns", "ideal": LONG},
            _sample("first abstract", LONG),  # verbatim repeat: one example
            _sample("listed references", [LONG + " again", "another"]),
            # 11 tokens as ROUGE-L counts them ("PEDOT:PSS" is two, "3-D" two): kept; 10: dropped
            _sample("boundary", "PEDOT:PSS layers for 3-D printed cells, made fast, cheap"),
            _sample("under", "PEDOT:PSS layers for 3-D printed cells made cheap")]
    summary = [_sample(f"claims {i}", f"Summary: most of the {i} studies agree that the treatment works well")
               for i in range(3)]
    archive = _evals_sdist(tmp_path / "evals.tar.gz", {"abstract2title": rows, "consensus_summary": summary})
    monkeypatch.setenv(openai_evals.VARIABLE, str(archive))
    openai_evals._all.cache_clear()
    yield archive
    openai_evals._all.cache_clear()


def test_openai_evals_rows_become_chat_instructions_with_long_references(evals_sdist, tmp_path, monkeypatch):
    titles = openai_evals.load_openai_evals(["openai_evals/abstract2title"])
    assert [q.turns[-1][1] for q in titles] == ["first abstract", "listed references", "boundary"]
    first = titles[0]
    assert first.free_text and first.chat and first.references == (LONG,)
    assert first.turns[0] == ("system", "Write a title for this abstract.")
    assert first.question == "System: Write a title for this abstract.\nUser: first abstract"
    assert titles[1].references == (LONG + " again", "another")  # the first is the training target
    uids = [q.uid for q in openai_evals.load_openai_evals()]
    assert len(uids) == 6 and len(set(uids)) == 6 and all(3 * 10**11 <= u < 1 << 40 for u in uids)
    assert (tmp_path / "cache" / "openai_evals" / openai_evals.VERSION / "abstract2title" / "samples.jsonl").is_file()
    monkeypatch.setenv(openai_evals.VARIABLE, str(tmp_path / "gone.tar.gz"))  # cached: the archive is not read
    openai_evals._all.cache_clear()
    assert [q.uid for q in openai_evals.load_openai_evals(["openai_evals/abstract2title"])] == [q.uid for q in titles]


def test_openai_evals_domains_serve_the_benchmark_shorthand(evals_sdist):
    config = parse_config({"clients": [{"name": "titles", "domains": ["openai_evals/abstract2title"]},
                                       {"name": "summaries", "domains": ["openai_evals/consensus_summary"]}],
                           "data": {"public_domains": ["openai_evals/abstract2title", "openai_evals/consensus_summary"],
                                    "eval_domains": ["openai_evals/consensus_summary"], "public_size": 2,
                                    "private_size": 1, "eval_size": 1}})
    split = federated_split(config)
    assert {q.domain for q in split.public} == {"openai_evals/abstract2title", "openai_evals/consensus_summary"}
    assert [q.domain for q in split.private["titles"]] == ["openai_evals/abstract2title"]
    drawn = [q.uid for q in split.public + split.private["titles"] + split.private["summaries"]
             + split.evaluation["openai_evals/consensus_summary"]]
    assert len(drawn) == len(set(drawn)) == 5
    with pytest.raises(Exception, match="openai_evals/abstract2title"):  # an unknown domain lists the known ones
        federated_split(parse_config({"clients": [{"name": "a", "domains": ["openai_evals/nope"]}]}))


@pytest.mark.slow
def test_real_openai_evals_tasks_from_pypi():
    questions = openai_evals.load_openai_evals()
    counts = {d: sum(q.domain == d for q in questions) for d in openai_evals.DOMAINS}
    assert counts == {"openai_evals/abstract2title": 242, "openai_evals/consensus_summary": 293}
    assert all(len(rouge_tokens(q.references[0])) >= 11 and q.turns[0][0] == "system" for q in questions)
