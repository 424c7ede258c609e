import re
import time

from catalog.ids import new_eval_id, new_pretrain_id, new_run_id, token


def test_run_ids_keep_their_format_and_sort_by_time():
    ids = []
    for _ in range(5):
        ids.append(new_run_id())
        time.sleep(0.002)
    assert all(re.fullmatch(r"\d{8}T\d{12}-[0-9a-f]{6}", i) for i in ids), ids
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_eval_and_pretrain_ids_keep_their_format():
    assert re.fullmatch(r"eval-\d{8}T\d{12}Z", new_eval_id())
    assert re.fullmatch(r"pretrain-\d{8}T\d{12}Z", new_pretrain_id())


def test_tokens_are_short_unique_hex():
    tokens = {token() for _ in range(1000)}
    assert len(tokens) == 1000 and all(re.fullmatch(r"[0-9a-f]{8}", t) for t in tokens)
    assert re.fullmatch(r"[0-9a-f]{6}", token(3))
