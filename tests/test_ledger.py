"""The run map of the import modes stays exact when it moves from memory to disk."""

from __future__ import annotations

import hashlib
import random

from importer.ledger import EntityLedger


def key(i: int) -> bytes:
    return hashlib.blake2b(str(i).encode(), digest_size=12).digest()


def test_the_ledger_answers_alike_before_and_after_it_spills(tmp_path):
    ledger = EntityLedger(memory_entries=500, directory=str(tmp_path))
    model: dict[bytes, tuple[int, bytes, int]] = {}
    rng = random.Random(5)
    for batch in range(40):
        keys = [key(rng.randrange(3000)) for _ in range(100)]
        assert ledger.load(keys) == {k: model[k] for k in keys if k in model}
        update = {k: (batch, bytes([batch]) * 4, rng.randrange(1, 10**6)) for k in keys[::2]}
        ledger.store(update)
        model.update(update)
    assert ledger.spilled and len(ledger) == len(model)
    assert ledger.load(list(model)) == model
    files = list(tmp_path.iterdir())
    assert files  # on disk while the run lasts...
    ledger.close()
    assert list(tmp_path.iterdir()) == []  # ...and gone after it
