"""The prediction log: lines in, the same records out, whatever rotates, crashes or writes at once."""
from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

from lifecycle import prediction_log as log


def record(writer: int, number: int) -> dict:
    return {"request_id": f"{writer}-{number}", "label": "cat", "embedding": [0.25] * 16, "pad": "x" * 200}


def test_records_come_back_in_order_and_rotation_keeps_whole_records_up_to_the_limit(tmp_path: Path):
    for number in range(40):
        log.append(tmp_path, [record(0, number)], max_bytes=2_000, backups=3)
    files = log.log_files(tmp_path)
    assert [path.name for path in files] == ["predictions.3.jsonl", "predictions.2.jsonl", "predictions.1.jsonl",
                                             "predictions.jsonl"]
    assert all(path.stat().st_size <= 2_000 for path in files)
    found = log.read_log(tmp_path)
    ids = [r["request_id"] for r in found.records]
    assert found.unreadable == 0
    assert ids == [f"0-{n}" for n in range(40 - len(ids), 40)]  # the newest, in order, none torn
    assert len(ids) < 40  # the oldest files were dropped


def test_a_line_cut_by_a_crash_is_skipped_and_counted_and_the_next_record_is_whole(tmp_path: Path):
    log.append(tmp_path, [record(0, 0), record(0, 1)], max_bytes=1 << 20, backups=2)
    current = tmp_path / "predictions.jsonl"
    with open(current, "ab") as handle:  # what a worker killed mid-write leaves
        handle.write(json.dumps(record(0, 2)).encode()[:57])
    log.append(tmp_path, [record(0, 3)], max_bytes=1 << 20, backups=2)
    found = log.read_log(tmp_path)
    assert [r["request_id"] for r in found.records] == ["0-0", "0-1", "0-3"]
    assert found.unreadable == 1


def _write_many(folder: str, writer: int, count: int) -> None:
    def thread(offset: int) -> None:
        for number in range(offset, count, 4):
            log.append(Path(folder), [record(writer, number)], max_bytes=1_500, backups=1_000)

    threads = [threading.Thread(target=thread, args=(offset,)) for offset in range(4)]
    for started in threads:
        started.start()
    for started in threads:
        started.join()


def test_two_processes_of_four_threads_each_lose_and_tear_nothing_while_rotating(tmp_path: Path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(str(tmp_path), writer, 200)) for writer in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    found = log.read_log(tmp_path)
    assert found.unreadable == 0
    assert len(log.log_files(tmp_path)) > 5  # it rotated, under contention
    assert sorted(r["request_id"] for r in found.records) == sorted(f"{w}-{n}" for w in range(2) for n in range(200))


def test_the_writer_never_raises_into_a_request_and_counts_what_a_refusing_disk_dropped(tmp_path: Path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the log folder should be")
    failures = []
    writer = log.PredictionLog(blocked, max_bytes=1 << 20, backups=2, on_failure=lambda n, e: failures.append((n, e)))
    writer.submit([record(0, 0), record(0, 1)])
    writer.submit([record(0, 2)])
    assert writer.flush()
    writer.close()
    assert writer.failures == 3
    assert sum(n for n, _ in failures) == 3 and all(isinstance(e, OSError) for _, e in failures)


def test_the_writer_appends_in_the_background_what_was_submitted(tmp_path: Path):
    writer = log.PredictionLog(tmp_path, max_bytes=1 << 20, backups=2)
    for number in range(5):
        writer.submit([record(1, number)])
    assert writer.flush()
    writer.close()
    assert [r["request_id"] for r in log.read_log(tmp_path).records] == [f"1-{n}" for n in range(5)]
    assert writer.failures == 0


def test_a_request_is_found_in_any_kept_file_and_the_last_label_counts(tmp_path: Path):
    for number in range(30):
        log.append(tmp_path, [{**record(0, number), "index": 0, "time": f"t{number:02d}"},
                              {**record(0, number), "index": 1, "time": f"t{number:02d}"}], max_bytes=2_000, backups=2)
    kept = [r["request_id"] for r in log.read_log(tmp_path).records]
    oldest = kept[0]
    assert [r["index"] for r in log.find(tmp_path, oldest)] == [0, 1]  # from the oldest rotated file
    assert log.find(tmp_path, "0-0") == [] and "0-0" not in kept  # rotated away
    assert log.oldest_time(tmp_path) == f"t{int(oldest.split('-')[1]):02d}"
    assert log.find(tmp_path, "0-2") == [] and log.find(tmp_path, '0-2"') == []
    log.record_label(tmp_path, oldest, "dog", "api", "t1")
    log.record_label(tmp_path, "0-29", "cat", "api", "t2")
    log.record_label(tmp_path, oldest, "cat", "csv", "t3")
    assert log.labels(tmp_path) == {oldest: "cat", "0-29": "cat"}


def test_one_large_batch_is_split_across_files_none_past_the_limit(tmp_path: Path):
    log.append(tmp_path, [record(2, number) for number in range(30)], max_bytes=2_000, backups=100)
    files = log.log_files(tmp_path)
    assert len(files) > 3 and all(path.stat().st_size <= 2_000 for path in files)
    assert [r["request_id"] for r in log.read_log(tmp_path).records] == [f"2-{n}" for n in range(30)]
