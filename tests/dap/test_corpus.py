import numpy as np
import pytest

from flowjax_thesis.models.dap.corpus import (
    build_corpus,
    from_token_lists,
    load_corpus,
    read_dap,
    split_by_author,
    split_tokens,
    tokenize,
    write_dap,
)
from flowjax_thesis.models.dap.evaluation import check_compatible, score_heldout


def _table(n_docs=40, seed=0):
    rng = np.random.default_rng(seed)
    words = ["q" + a + b for a in "abcdef" for b in "ghijk"]
    authors, dates, texts = [], [], []
    for d in range(n_docs):
        authors.append(f"a{d % 4}")
        dates.append(f"2020-01-{1 + (d * 3) % 28:02d}")
        n = 5 if d % 10 == 0 else 20  # every tenth document is too short
        texts.append(" ".join(rng.choice(words, size=n)) + " the and of")
    return authors, dates, texts


def test_tokenize_drops_stopwords_and_case():
    assert tokenize("The Cat and THE dog, is it?") == ["cat", "dog"]


def test_build_corpus_filters_and_vocab():
    authors, dates, texts = _table()
    small = build_corpus(authors, dates, texts, vocab_size=10, min_words=1)
    assert small.vocab_size == 10
    c = build_corpus(authors, dates, texts, vocab_size=30, min_words=10, time_unit_days=7)
    assert "the" not in c.vocab
    assert c.num_docs == 36  # the four 5-word documents are dropped
    assert np.all(c.doc_lengths >= 10)
    assert np.all(np.diff(c.time_values) > 0)
    assert c.num_authors == 4


def test_relative_time_per_author():
    c = build_corpus(
        ["a", "a", "b", "b"],
        ["2020-01-01", "2020-01-15", "2020-02-01", "2020-02-08"],
        ["xx yy zz ww"] * 4,
        min_words=1,
        relative_to="author",
        stopwords=[],
    )
    assert list(c.time_values) == [0.0, 7.0, 14.0]
    assert list(c.times) == [0, 2, 0, 1]


def test_split_by_author():
    authors, dates, texts = _table(200)
    c = build_corpus(authors, dates, texts, min_words=10)
    train, test = split_by_author(c, 0.1, seed=0)
    assert train.num_docs + test.num_docs == c.num_docs
    for a in range(c.num_authors):
        n = np.sum(c.authors == a)
        assert np.sum(test.authors == a) == round(0.1 * n)
    check_compatible(train, test)


def test_unseen_test_author_is_an_error():
    c = from_token_lists(
        [[0, 1], [1, 2], [2, 0]], [0, 0, 1], [0, 1, 1], ["a", "b", "c"], author_names=["x", "y"]
    )
    train, test = c.subset([0, 1]), c.subset([2])
    with pytest.raises(ValueError, match="no training document"):
        check_compatible(train, test)


def test_save_load_memmap_round_trip(tmp_path):
    authors, dates, texts = _table()
    c = build_corpus(authors, dates, texts, min_words=10)
    c2 = load_corpus(c.save(str(tmp_path / "corpus")))
    assert isinstance(c2.word_ids, np.memmap)
    assert c2.vocab == c.vocab and c2.author_names == c.author_names
    for d in range(c.num_docs):
        np.testing.assert_array_equal(c2.doc(d)[0], c.doc(d)[0])
    b = c2.batch([0, 3, 5], pad_docs_to=4)
    assert b.word_ids.shape[0] == 4 and b.mask.tolist() == [1, 1, 1, 0]
    assert b.counts.sum() == c.doc_lengths[[0, 3, 5]].sum()


def test_dap_format_round_trip(tmp_path):
    authors, dates, texts = _table()
    c = build_corpus(authors, dates, texts, min_words=10)
    path = write_dap(c, str(tmp_path / "c.dap"))
    c2 = read_dap(path, vocab=c.vocab)
    assert c2.num_docs == c.num_docs and c2.num_times == c.num_times
    np.testing.assert_allclose(c2.time_values, c.time_values)
    order = np.argsort(c.times, kind="stable")
    for i, d in enumerate(order):
        np.testing.assert_array_equal(c2.doc(i)[0], c.doc(int(d))[0])
        np.testing.assert_array_equal(c2.doc(i)[1], c.doc(int(d))[1])
        assert c2.author_names[c2.authors[i]] == c.author_names[c.authors[d]]


def test_dap_reader_errors(tmp_path):
    p = tmp_path / "bad.dap"
    p.write_text("1\n0.0\n2\na 1 0:1\n")
    with pytest.raises(ValueError, match="unexpected end of file"):
        read_dap(str(p))
    p.write_text("1\n0.0\n1\na 2 0:1\n")
    with pytest.raises(ValueError, match="says 2 terms"):
        read_dap(str(p))


def test_bad_inputs():
    with pytest.raises(ValueError, match="lack an author"):
        build_corpus(["a", None], ["2020-01-01", "2020-01-02"], ["x " * 20, "y " * 20])
    with pytest.raises(ValueError, match="lack an author"):
        build_corpus(["a", "b"], ["2020-01-01", ""], ["x " * 20, "y " * 20])
    c = build_corpus(
        ["a", None], ["2020-01-01", "2020-01-02"], ["xx " * 20, "yy " * 20], drop_missing=True
    )
    assert c.num_docs == 1
    with pytest.raises(ValueError, match="empty vocabulary"):
        build_corpus(["a"], ["2020-01-01"], ["the and of"])
    with pytest.raises(ValueError, match="empty corpus"):
        build_corpus([], [], [])
    with pytest.raises(ValueError, match="empty corpus"):
        build_corpus(["a"], ["2020-01-01"], ["cat dog"], min_words=10)
    with pytest.raises(ValueError, match="equal lengths"):
        build_corpus(["a"], ["2020-01-01", "2020-01-02"], ["cat"])


def test_split_tokens_and_scoring():
    c = from_token_lists([[0, 0, 1, 2, 2, 2], [1, 1, 1, 0]], [0, 1], [0, 0], ["a", "b", "c"])
    obs, held = split_tokens(c, seed=3)
    np.testing.assert_allclose(obs.doc_lengths + held.doc_lengths, c.doc_lengths)
    doc_topic = np.array([[0.3, 0.7], [1.0, 0.0]])
    tw = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    out = score_heldout(doc_topic, tw, held)
    manual = 0.0
    for d in range(2):
        w, cnt = held.doc(d)
        manual += sum(k * np.log(doc_topic[d] @ tw[:, i]) for i, k in zip(w, cnt, strict=True))
    assert out["loglik"] == pytest.approx(manual)
    with pytest.raises(ValueError, match="doc_topic must have shape"):
        score_heldout(doc_topic[:1], tw, held)
