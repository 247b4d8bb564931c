"""A catch-up remembers the anchor-log objects it wrote (storage/log_cache.py).

A run with late windows reads the signed log back from its newest bundle; in a catch-up
those bundles and tiles are the ones the previous runs of the same process wrote, and
fetching them again cost ~10 % of a 10M-row catch-up. The cache must keep the log the
only authority: remembered bytes are authenticated like fetched ones, bytes read from the
bucket are never remembered, and readers outside a catch-up (audits, proofs) read the
bucket as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flows.anchor_windows import anchor_windows
from flows.catch_up import anchor_until_caught_up
from storage import log_cache
from storage.checkpoint_store import newest_entries
from storage.log_cache import LogObjectCache, WindowPositions, remembering
from storage.objectstore import LocalObjectStore, ObjectStore
from storage.s3store import S3ObjectStore
from storage.tlog import LogCorrupted, LogForked, LogReader, log_prefix
from storage.tlog_writer import LogWriter
from tasks.tlog.entries import entry_bytes
from tasks.tlog.note import Signer, Verifier
from tasks.tlog.tiles import entries_path
from tests.pipeline_env import PipelineEnv, demo_observations, make_env
from tests.test_checkpoint_store import entry as window_entry_of
from tests.test_checkpoint_store import window_id

SCOPE = "dwd.remembered"
ORIGIN = "streamnotary/dwd.remembered"


def test_the_cache_keeps_at_most_its_bytes_least_recently_used_first_out() -> None:
    cache = LogObjectCache(max_bytes=10)
    cache.remember("s", "a", b"1234")
    cache.remember("s", "b", b"5678")
    assert cache.recall("s", "a") == b"1234"  # a is now the most recently used
    cache.remember("s", "c", b"90")
    assert cache.size == 10 and len(cache) == 3
    cache.remember("s", "d", b"x")  # over the bound: b, the least recently used, goes
    assert cache.recall("s", "b") is None and cache.recall("s", "a") == b"1234"
    assert cache.size == 7
    cache.remember("s", "big", b"y" * 11)  # larger than the whole cache: not kept
    assert cache.recall("s", "big") is None and cache.size == 7
    cache.remember("s", "a", b"12")  # the same key again replaces, counted once
    assert cache.size == 5
    assert cache.recall("other store", "a") is None  # keyed by store and key
    assert (cache.hits, cache.misses) == (2, 3)
    with pytest.raises(ValueError):
        LogObjectCache(max_bytes=-1)


def test_only_a_remembering_block_has_a_cache_and_nested_blocks_share_it() -> None:
    assert log_cache.active() is None
    with remembering() as outer:
        assert log_cache.active() is outer
        with remembering() as inner:
            assert inner is outer
        assert log_cache.active() is outer
    assert log_cache.active() is None
    with pytest.raises(RuntimeError), remembering():
        raise RuntimeError("a failed catch-up")
    assert log_cache.active() is None  # dropped on the way out, failure or not


def entry(window: int, revision: int) -> bytes:
    return entry_bytes(window_entry_of(window, revision, SCOPE))


def counting_gets(store: ObjectStore) -> list[str]:
    """Record every key `store` reads from the bucket (the store itself is real)."""
    read: list[str] = []
    real_get = store.get

    def get(key: str) -> bytes:
        read.append(key)
        return real_get(key)

    store.get = get  # type: ignore[method-assign]
    return read


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]
    return LocalObjectStore(tmp_path / "objects")


def three_runs(store: ObjectStore, signer: Signer) -> None:
    """Three appends (runs) of 300 windows each, the third revising ten of the first's."""
    writer = LogWriter(store, SCOPE, signer, ORIGIN)
    writer.append(0, [entry(w, 0) for w in range(300)])
    writer.append(300, [entry(w, 0) for w in range(300, 600)])
    writer.append(600, [entry(w, 1) for w in range(10)] + [entry(w, 0) for w in range(600, 890)])


def look_up_in_a_catch_up(
    store: ObjectStore,
    write: Callable[[ObjectStore, Signer], None],
    wanted: Collection[str],
    size: int,
    **limits: int,
) -> tuple[dict[str, Any], list[str], LogObjectCache, Verifier]:
    """`write` a log of `size` entries inside a catch-up's cache (`limits`: its bounds),
    then look `wanted` up there: what was found, the keys read from the bucket since the
    writes (the signed checkpoint first), the cache and the log's verifier."""
    signer = Signer.generate("operator")
    with remembering(**limits) as cache:
        write(store, signer)
        read = counting_gets(store)
        verifier = signer.named(ORIGIN).verifier()
        reader = LogReader(store, SCOPE, verifier, ORIGIN)
        head = reader.checkpoint()
        assert head is not None and head.size == size
        found = newest_entries(reader, head.size, wanted)
    return dict(found), read, cache, verifier


def test_a_catch_up_reads_back_what_it_wrote_without_fetching_it(store: ObjectStore) -> None:
    wanted = {window_id(w) for w in (3, 250, 310, 700)}
    found, read, cache, verifier = look_up_in_a_catch_up(store, three_runs, wanted, 900)
    # one GET: the signed checkpoint; every bundle and tile came from what the runs wrote
    assert read == [f"{log_prefix(SCOPE)}/checkpoint"], read
    assert cache.hits > 0
    assert {w: e["revision"] for w, e in found.items()} == {
        window_id(3): 1,
        window_id(250): 0,
        window_id(310): 0,
        window_id(700): 0,
    }
    # the same answer from the bucket alone, outside a catch-up (and it does fetch)
    fresh = LogReader(store, SCOPE, verifier, ORIGIN)
    assert newest_entries(fresh, 900, wanted) == found
    assert any("/tile/entries/" in k for k in read[1:])


def test_remembered_bytes_are_authenticated_like_fetched_ones(store: ObjectStore) -> None:
    """Drill: a remembered bundle that is not what the signed head commits to (a poisoned
    or buggy cache) is refused exactly as an edited bundle in the bucket would be."""
    signer = Signer.generate("operator")
    verifier = signer.named(ORIGIN).verifier()
    with remembering() as cache:
        three_runs(store, signer)
        key = f"{log_prefix(SCOPE)}/{entries_path(0)}"
        identity = repr(store)
        genuine = cache.recall(identity, key)
        assert genuine is not None
        cache.remember(identity, key, genuine.replace(b"2019010", b"2019020", 1))
        reader = LogReader(store, SCOPE, verifier, ORIGIN)
        reader.checkpoint()
        with pytest.raises(LogCorrupted):
            list(reader.leaf_bytes(0, 10))


def test_what_is_read_from_the_bucket_is_never_remembered(store: ObjectStore) -> None:
    """Only bytes this process computed and stored are kept: a catch-up reading a log that
    another process wrote fetches it, and neither an edit of the bucket nor anything
    fetched lands in the cache."""
    signer = Signer.generate("operator")
    verifier = signer.named(ORIGIN).verifier()
    three_runs(store, signer)  # another process: no remembering
    with remembering() as cache:
        read = counting_gets(store)
        reader = LogReader(store, SCOPE, verifier, ORIGIN)
        head = reader.checkpoint()
        assert head is not None
        newest_entries(reader, head.size, {window_id(3)})
        assert len(cache) == 0 and cache.size == 0
    # every tile and bundle fetched, prefetched ones included, is counted as a miss (what
    # a run's summary reports as `log_cache.misses`); the signed checkpoint is never cached
    fetched = [k for k in read if not k.endswith("/checkpoint")]
    assert (cache.hits, cache.misses) == (0, len(fetched)) and fetched, read


def write_then_edit_first_bundle(store: ObjectStore, signer: Signer) -> None:
    """`three_runs` (under the caller's cache, if any), then an edit of the stored copy of
    the first entry bundle by someone who can write to the bucket."""
    key = f"{log_prefix(SCOPE)}/{entries_path(0)}"
    three_runs(store, signer)
    original = store.get(key)
    store.delete(key)
    store.put(key, original.replace(b"2019010", b"2019020", 1))


def first_entries(store: ObjectStore, signer: Signer) -> list[bytes]:
    """Entries [0, 10) of the log, read by a fresh reader (`LogCorrupted` if edited)."""
    reader = LogReader(store, SCOPE, signer.named(ORIGIN).verifier(), ORIGIN)
    reader.checkpoint()
    return list(reader.leaf_bytes(0, 10))


def test_an_edited_bucket_still_fails_every_reader_outside_the_catch_up(
    store: ObjectStore,
) -> None:
    """What the cache hides, and from whom: after a catch-up wrote a bundle, an edit of the
    stored copy is not seen by that catch-up's own lookups (they use the authentic bytes
    it wrote), but every audit and proof reads the bucket and refuses it."""
    signer = Signer.generate("operator")
    with remembering():
        write_then_edit_first_bundle(store, signer)
        assert len(first_entries(store, signer)) == 10
    with pytest.raises(LogCorrupted):
        first_entries(store, signer)


def test_another_thread_of_the_process_reads_the_bucket_during_a_catch_up(
    store: ObjectStore,
) -> None:
    """Drill: an audit running on another thread while a catch-up remembers (one process
    serving both) is not handed the catch-up's bytes: it reads the edited bucket and
    refuses it, while the catch-up's own reads use what it wrote."""
    signer = Signer.generate("operator")
    with remembering():
        write_then_edit_first_bundle(store, signer)

        def audit() -> BaseException | None:
            try:
                first_entries(store, signer)
            except LogCorrupted as exc:
                return exc
            return None

        with ThreadPoolExecutor(1) as pool:
            assert isinstance(pool.submit(audit).result(), LogCorrupted)
        assert len(first_entries(store, signer)) == 10


def test_window_positions_cover_one_contiguous_span_of_this_process_s_appends() -> None:
    positions = WindowPositions(max_windows=4)
    positions.appended("log", 10, ["a", "b", None])
    assert positions.span("log") == (10, 13)
    positions.appended("log", 13, ["a", "c"])  # a revised: its newest position wins
    assert positions.span("log") == (10, 15)
    assert [positions.position("log", w) for w in "abcd"] == [13, 11, 14, None]
    assert positions.span("other log") is None and positions.position("other log", "a") is None
    positions.appended("log", 15, ["d", "e"])  # five windows > 4: b (the oldest) goes
    assert positions.span("log") == (12, 17) and positions.position("log", "b") is None
    assert len(positions) == 4
    positions.appended("log", 20, ["f"])  # not where the span ended: another writer's gap
    assert positions.span("log") == (20, 21) and positions.position("log", "a") is None
    with pytest.raises(ValueError):
        WindowPositions(max_windows=0)


def append_windows(writer: LogWriter, base: int, windows: list[tuple[int, int]]) -> None:
    """Append window entries (window, revision) as a run does, naming their windows."""
    writer.append(
        base,
        [entry(w, r) for w, r in windows],
        window_ids=[window_id(w) for w, _ in windows],
    )


def six_runs(store: ObjectStore, signer: Signer) -> None:
    """Six runs of 500 windows (~12 bundles); the fourth revises windows 3 and 250."""
    writer = LogWriter(store, SCOPE, signer, ORIGIN)
    for run in range(6):
        windows = [(w, 0) for w in range(run * 500, run * 500 + 500)]
        if run == 3:
            windows[:2] = [(3, 1), (250, 1)]
        append_windows(writer, run * 500, windows)


def bundles_read(read: list[str]) -> set[str]:
    return {k.rsplit("/tile/entries/", 1)[1] for k in read if "/tile/entries/" in k}


def test_a_catch_up_reads_only_the_bundles_of_the_late_windows_it_appended(
    store: ObjectStore,
) -> None:
    """Late windows anchored long before (past what the object cache holds, here nothing):
    the catch-up reads the bundles of their newest entries, not the log between them and
    the head; the answer is the one a walk of the bucket's log gives."""
    wanted = {window_id(w) for w in (3, 250, 1000, 1001, 2990)}
    found, read, cache, verifier = look_up_in_a_catch_up(store, six_runs, wanted, 3000, max_bytes=0)
    # windows 3 and 250 at 1500 and 1501 (bundle 5), 1000-1001 (bundle 3), 2990 (bundle 11)
    assert bundles_read(read) == {"003", "005", "011.p/184"}, read
    assert cache.located == 5
    assert {w: e["revision"] for w, e in found.items()} == {
        window_id(3): 1,
        window_id(250): 1,
        window_id(1000): 0,
        window_id(1001): 0,
        window_id(2990): 0,
    }
    walked = counting_gets(store)
    assert newest_entries(LogReader(store, SCOPE, verifier, ORIGIN), 3000, wanted) == found
    assert len(bundles_read(walked)) >= 9  # the walk outside a catch-up: bundles 11 .. 3


def test_the_lookup_walks_what_another_writer_appended_and_what_the_span_lost(
    store: ObjectStore,
) -> None:
    """Positions only speak for the span this process appended contiguously: a revision
    another writer appended after it is found by walking from the head, and a window
    whose newest entry fell out of the bounded span is found by walking before it."""
    signer = Signer.generate("operator")
    verifier = signer.named(ORIGIN).verifier()
    with remembering(max_bytes=0, max_windows=1000) as cache:
        six_runs(store, signer)

        def another_writer() -> None:  # a thread of its own: not in the catch-up's context
            assert log_cache.active() is None
            append_windows(LogWriter(store, SCOPE, signer, ORIGIN), 3000, [(2500, 1)])

        with ThreadPoolExecutor(1) as pool:
            pool.submit(another_writer).result()
        assert cache.positions(f"{store!r}/{log_prefix(SCOPE)}", [])[0] == (2000, 3000)
        reader = LogReader(store, SCOPE, verifier, ORIGIN)
        reader.checkpoint()
        wanted = {window_id(w) for w in (2500, 2501, 3, 400)}
        found = newest_entries(reader, 3001, wanted)
    assert {w: e["revision"] for w, e in found.items()} == {
        window_id(2500): 1,  # another writer's, after the span
        window_id(2501): 0,  # by position
        window_id(3): 1,  # before the span (at 1500): walked
        window_id(400): 0,
    }
    assert cache.located == 1  # 2501 only: 2500's newer entry was found by the walk
    assert newest_entries(LogReader(store, SCOPE, verifier, ORIGIN), 3001, wanted) == found


def test_a_log_that_is_not_the_one_appended_is_refused_not_trusted_by_position(
    store: ObjectStore,
) -> None:
    """Drill: the log in the bucket is replaced, under the same key and signed by it (an
    operator rewriting history), by one of the same size whose entries sit elsewhere. The
    catch-up's lookup reads an authentic entry at a remembered position that names another
    window and stops with `LogForked`, instead of answering from where it thinks it wrote."""
    signer = Signer.generate("operator")
    verifier = signer.named(ORIGIN).verifier()
    with remembering(max_bytes=0):
        six_runs(store, signer)

        def rewrite() -> None:
            for key in list(store.list(f"{log_prefix(SCOPE)}/")):
                store.delete(key)
            writer = LogWriter(store, SCOPE, signer, ORIGIN)
            append_windows(writer, 0, [(w, 0) for w in reversed(range(3000))])

        with ThreadPoolExecutor(1) as pool:
            pool.submit(rewrite).result()
        reader = LogReader(store, SCOPE, verifier, ORIGIN)
        reader.checkpoint()
        with pytest.raises(LogForked):
            newest_entries(reader, 3000, {window_id(2990)})


HARNESS = pytest.mark.usefixtures("prefect_harness")


def late_stream() -> list[Any]:
    """Five days of both stations, one hour of the first day held back to the very end:
    it arrives after its window was anchored, so the last run revises that window."""
    observations = demo_observations(days=5)
    late = observations[5]
    return [o for o in observations if o is not late] + [late]


def bundle_reads_of(
    env: PipelineEnv, monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any]
) -> list[str]:
    """The log's entry bundles read from the bucket while `run` runs (real SeaweedFS)."""
    read: list[str] = []
    real_get = S3ObjectStore.get

    def get(self: S3ObjectStore, key: str) -> bytes:
        if self.bucket == env.bucket and "/tile/entries/" in key:
            read.append(key)
        return real_get(self, key)

    with monkeypatch.context() as patch:
        patch.setattr(S3ObjectStore, "get", get)
        run()
    return read


@HARNESS
def test_a_catch_up_s_late_window_lookup_fetches_no_bundle_it_wrote(
    tmp_path: Path, kafka_bootstrap: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real broker and S3 server: the same capped backlog with a late hour, anchored
    by one catch-up and by separate runs, gives the same log; the catch-up's lookup of the
    late window's latest revision reads no entry bundle back, the separate runs' do."""
    monkeypatch.setenv("STREAMNOTARY_MAX_MESSAGES_PER_RUN", "100")
    monkeypatch.setenv("STREAMNOTARY_READ_PAGE_MESSAGES", "40")
    catch_up = make_env(tmp_path / "catch-up", kafka_bootstrap, s3_server)
    separate = make_env(tmp_path / "separate", kafka_bootstrap, s3_server)
    stream = late_stream()
    for e in (catch_up, separate):
        e.produce_observations(stream)

    summaries: dict[str, list[dict[str, Any]]] = {"catch-up": [], "separate": []}

    def separate_runs() -> None:
        while True:
            summaries["separate"].append(anchor_windows())
            if not summaries["separate"][-1]["backlog"]:
                return

    with catch_up.active():
        caught_up = bundle_reads_of(
            catch_up, monkeypatch, lambda: summaries["catch-up"].extend(anchor_until_caught_up())
        )
    with separate.active():
        runs = bundle_reads_of(separate, monkeypatch, separate_runs)
    revised = [e for e in catch_up.log_entries() if e["type"] == "window" and e["revision"]]
    assert len(revised) == 1, revised  # the late hour's window, revised by the last run
    assert caught_up == [], caught_up
    assert runs, "separate runs must fetch the bundles back (else this test shows nothing)"
    assert catch_up.roots() == separate.roots()
    # each run's summary counts what its reads found remembered and what they fetched back
    counts = [s["log_cache"] for s in summaries["catch-up"]]
    assert sum(c["hits"] for c in counts) > 0 and sum(c["misses"] for c in counts) == 0, counts
    # the late window's entry read where the catch-up appended it, not found by a walk
    assert sum(c["located"] for c in counts) == 1, counts
    assert summaries["separate"] and all(s["log_cache"] is None for s in summaries["separate"])
