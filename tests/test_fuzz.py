"""The fast version of the fuzzing campaign (tests/fuzz/fuzz_decoder.py): the corpus, every
saved finding, and a few hundred fresh mutations, each a clean error or a correct decode."""

import pytest

import vaecodec
from vaecodec.weights import load_model

from .fuzz import fuzz_decoder as fuzz

SEEDS = fuzz.seeds()


def test_corpus_decodes_with_the_shipped_weights():
    assert len(SEEDS) >= 8
    for data in SEEDS:
        assert vaecodec.info(data)["weights_hash"] == load_model().weights_hash.hex(), (
            "the fuzz corpus predates the shipped weights: "
            "run python tests/fuzz/fuzz_decoder.py --refresh-corpus")
        assert fuzz.check(data)[0] == "decoded"


@pytest.mark.parametrize("path", sorted(fuzz.FAILURES.glob("*.vae")), ids=lambda p: p.name)
def test_saved_findings_stay_fixed(path):
    outcome, _, detail = fuzz.check(path.read_bytes())
    assert outcome != "failure", detail


def test_fresh_mutations():
    reached = 0
    for n in range(300):
        data = fuzz.make_input(seed=12345, n=n, files=SEEDS)
        outcome, past_header, detail = fuzz.check(data)
        assert outcome != "failure", (n, detail)
        reached += past_header
    assert reached > 100      # the mutations get past the header, to the entropy decoder
