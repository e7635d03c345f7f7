"""td_fairseq/synthetic.py: a seeded corpus of detokenized sentences that sacreBLEU scores quietly."""
import logging

from td_fairseq.synthetic import detokenize, make_corpus, write_corpus


def test_seeded():
    assert make_corpus(50, seed=3) == make_corpus(50, seed=3)
    assert make_corpus(50, seed=3) != make_corpus(50, seed=4)


def test_sentences_are_detokenized():
    assert detokenize(["heute", "sieht", "der", "mann", "den", "hund", ",", "weil", "er", "müde", "ist"]) == \
        "heute sieht der mann den hund, weil er müde ist."
    pairs = make_corpus(500, seed=1)
    assert any("," in side for pair in pairs for side in pair)
    for pair in pairs:
        for side in pair:
            assert side.endswith(".") and not side.endswith(" .") and " ," not in side, side
            assert side == side.strip() and "  " not in side


def test_sacrebleu_scores_it_without_a_detokenize_warning(caplog):
    from sacrebleu.metrics import BLEU
    references = [german for _, german in make_corpus(300, seed=2)]
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        score = BLEU().corpus_score(references, [references]).score
    assert round(score, 6) == 100.0
    assert not [r for r in caplog.records if "detokenize" in r.getMessage()], caplog.text


def test_write_corpus(tmp_path):
    write_corpus(str(tmp_path / "train"), 20, seed=5)
    english = (tmp_path / "train.en").read_text(encoding="utf-8").splitlines()
    german = (tmp_path / "train.de").read_text(encoding="utf-8").splitlines()
    assert list(zip(english, german)) == make_corpus(20, seed=5)
