"""Content-addressed caches: keys follow exactly the inputs, corrupt entries are recomputed,
concurrent trials compute an entry once, and cached features give the same results."""
from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import torch

from bench.trial.cache import CacheStore, cache_key
from bench.api.plugins import get_registry
from bench.config.matrix import trial_key
from bench.config.schema import TrialSpec
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from bench.trial.inputs import TrialInputs
from conftest import TINY_IMAGE, TINY_TEXT, tiny_trial

RECORDS = [{"item_id": f"i{i}", "title": f"acme kettle number {i}", "image": None, "label": 0, "group": -1}
           for i in range(10)]


def _encoder(kind="text", **options):
    spec = get_registry().get("encoder", "hf_text" if kind == "text" else "timm_image")
    base = dict((TINY_TEXT if kind == "text" else TINY_IMAGE)["options"])
    base.update(options, freeze="all")
    return spec.build(base, None)


def test_feature_keys_follow_exactly_the_deciding_inputs(tmp_path):
    store = CacheStore(tmp_path)
    enc = _encoder()

    def run(encoder, records=RECORDS, dataset="d1", **kw):
        before = store.misses
        TrialInputs(store, dataset, torch.device("cpu"), batch_size=4).features("text", encoder, records, with_sequence=True)
        return int(store.misses > before)  # 1 = computed, 0 = served from the cache

    assert run(enc) == 1
    assert run(enc) == 0                       # same everything: a hit, even from a new TrialInputs
    assert run(_encoder()) == 0                # a new object with identical weights: still a hit
    assert run(enc, records=RECORDS[:5]) == 1  # other items
    assert run(enc, dataset="d2") == 1         # other dataset content
    assert run(_encoder(max_length=8)) == 1    # other preprocessing
    with torch.no_grad():
        next(enc.parameters()).add_(0.01)      # other weights
    assert run(enc) == 1


def test_weights_digest_covers_batchnorm_counters():
    """CNN encoders carry 0-dim buffers (BatchNorm's num_batches_tracked)."""
    from bench.trial.inputs import weights_digest

    enc = _encoder("image", model="tf_efficientnet_lite0", model_kwargs={})
    assert any(t.dim() == 0 for t in enc.state_dict().values())
    before = weights_digest(enc)
    assert before == weights_digest(enc)
    with torch.no_grad():
        next(enc.parameters()).add_(1.0)
    assert weights_digest(enc) != before


def test_entry_with_sequences_serves_pooled_only_readers(tmp_path):
    store = CacheStore(tmp_path)
    enc = _encoder()
    full = TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=True)
    misses = store.misses
    pooled = TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=False)
    assert store.misses == misses  # nothing encoded again
    batch = pooled(RECORDS[:3])
    assert set(batch) == {"cached_pooled"}
    assert torch.equal(batch["cached_pooled"], full(RECORDS[:3])["cached_pooled"])


def test_pooled_only_reader_then_sequence_reader_encode_once(tmp_path):
    """Whichever reader comes first, the entry it leaves serves the other: the order of a matrix
    never decides whether a frozen encoder runs twice."""
    store = CacheStore(tmp_path)
    enc = _encoder()
    pooled = TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=False)
    assert (store.misses, store.hits) == (1, 0)  # the features only: no inputs entry is built to feed them
    full = TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=True)
    assert (store.misses, store.hits) == (1, 1)
    assert set(pooled(RECORDS[:2])) == {"cached_pooled"}
    assert set(full(RECORDS[:2])) == {"cached_pooled", "cached_sequence", "cached_mask"}
    assert torch.equal(pooled(RECORDS)["cached_pooled"], full(RECORDS)["cached_pooled"])


def test_pooled_only_reader_leaves_the_sequence_on_disk(tmp_path):
    from safetensors import safe_open

    store = CacheStore(tmp_path)
    enc = _encoder()
    TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=True)
    [entry] = [p for p in tmp_path.rglob("*.safetensors")
               if "cached_pooled" in safe_open(str(p), framework="pt").keys()]
    with safe_open(str(entry), framework="pt") as f:
        stored = {name: f.get_tensor(name) for name in f.keys()}
    assert stored["cached_sequence"].dtype == torch.float16 and stored["cached_pooled"].dtype == torch.float32
    nbytes = {name: t.numel() * t.element_size() for name, t in stored.items()}

    reader = CacheStore(tmp_path)
    TrialInputs(reader, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=False)
    assert reader.bytes_read == nbytes["cached_pooled"]  # not a byte of the sequence or the mask
    reader = CacheStore(tmp_path)
    TrialInputs(reader, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=True)
    assert reader.bytes_read == sum(nbytes.values())


def test_half_precision_round_trip_and_float32_fallback():
    from bench.trial.inputs import half_if_fits

    values = torch.randn(50, 7, 16, generator=torch.Generator().manual_seed(0)) * 30
    values[0, 0, :3] = torch.tensor([1e-6, -3e-7, 0.0])  # below float16's normal range: absolute error only
    half = half_if_fits(values)
    assert half.dtype == torch.float16
    error = (half.float() - values).abs()
    normal = values.abs() >= torch.finfo(torch.float16).tiny
    assert float((error[normal] / values.abs()[normal]).max()) <= 2**-11  # round to nearest, 11 bits
    assert float(error[~normal].max()) <= 2**-25  # half the spacing of float16's subnormals
    for bad in (70000.0, float("inf"), float("nan")):
        spoiled = values.clone()
        spoiled[3, 2, 1] = bad
        kept = half_if_fits(spoiled)
        assert kept.dtype == torch.float32 and torch.equal(kept.nan_to_num(), spoiled.nan_to_num())


def test_sequences_beyond_float16_stay_float32_in_the_entry(tmp_path):
    """A real encoder whose outputs overflow float16: the entry keeps them exactly."""
    store = CacheStore(tmp_path)
    enc = _encoder()
    last_norm = [m for m in enc.modules() if isinstance(m, torch.nn.LayerNorm)][-1]
    with torch.no_grad():
        last_norm.weight.mul_(1e6)
    table = TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=True)
    assert table.tensors["cached_sequence"].dtype == torch.float32
    direct = enc.eval()(enc.preprocess(RECORDS[:3]))
    assert float(direct.sequence.abs().max()) > torch.finfo(torch.float16).max
    got = table(RECORDS[:3])["cached_sequence"]
    assert torch.allclose(got, direct.sequence[:, : got.shape[1]], rtol=1e-5)


def test_an_entry_of_the_old_layout_is_never_read(tmp_path):
    """Old feature entries (a `sequence` flag in the key, float32, one whole-entry checksum) miss."""
    from bench.trial.cache import _checksum
    from bench.trial.inputs import items_digest, weights_digest
    from safetensors.torch import save_file

    store = CacheStore(tmp_path)
    enc = _encoder()
    for sequence in (True, False):
        old_key = cache_key(kind="features", dataset="d", modality="text", encoder=type(enc).__qualname__,
                            weights=weights_digest(enc), preprocess=enc.preprocess_fingerprint(),
                            items=items_digest(RECORDS), sequence=sequence, amp="off")
        poison = {"cached_pooled": torch.full((len(RECORDS), enc.dim), 7.0)}
        store.path(old_key).parent.mkdir(parents=True, exist_ok=True)
        save_file(poison, str(store.path(old_key)), metadata={"checksum": _checksum(poison)})
        assert store.read(old_key) is not None  # a valid entry of the old layout...
    table = TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=False)
    assert not torch.any(table(RECORDS)["cached_pooled"] == 7.0)  # ...that the new keys never reach


def test_entries_with_one_whole_checksum_are_still_verified(tmp_path):
    from bench.trial.cache import _checksum
    from safetensors.torch import save_file

    store = CacheStore(tmp_path)
    value = {"x": torch.arange(100, dtype=torch.float32)}
    save_file(value, str(tmp_path / "entry"), metadata={"checksum": _checksum(value)})
    key = "ab" * 12
    store.path(key).parent.mkdir(parents=True, exist_ok=True)
    data = (tmp_path / "entry").read_bytes()
    store.path(key).write_bytes(data)
    assert torch.equal(store.read(key)["x"], value["x"])
    store.path(key).write_bytes(data[:-4] + bytes(4))
    assert store.read(key) is None and not store.path(key).exists()


def test_cache_seconds_count_nested_work_once(tmp_path):
    inputs = TrialInputs(CacheStore(tmp_path), "d", torch.device("cpu"), batch_size=4)
    start = time.perf_counter()
    inputs.features("text", _encoder(), RECORDS, with_sequence=True)
    assert inputs.seconds <= time.perf_counter() - start


def test_cached_features_equal_computed_ones(tmp_path):
    enc = _encoder()
    table = TrialInputs(CacheStore(tmp_path), "d", torch.device("cpu"), batch_size=3).features(
        "text", enc, RECORDS, with_sequence=True)
    batch = RECORDS[2:6]
    cached = table(batch)
    direct = enc.eval()(enc.preprocess(batch))
    assert torch.allclose(cached["cached_pooled"], direct.pooled, atol=1e-5)
    n = direct.sequence.shape[1]
    assert cached["cached_sequence"].shape[1] == n and cached["cached_sequence"].dtype == torch.float32
    # stored in float16: within its rounding (relative 2**-11) of the float32 values
    assert torch.allclose(cached["cached_sequence"], direct.sequence, rtol=2**-11, atol=1e-5)


def test_frozen_joint_encoder_keeps_its_extras(tmp_path):
    """Per-kind embeddings of a frozen single-stream encoder survive the cache (max-of-kinds needs them)."""
    from bench.trial.model import BenchModel

    spec = get_registry().get("encoder", "single_stream")
    enc = spec.build({"img_size": 32, "patch_size": 16, "max_length": 16, "freeze": "all"}, None)
    table = TrialInputs(CacheStore(tmp_path), "d", torch.device("cpu"), batch_size=4).features(
        "joint", enc, RECORDS, with_sequence=False)
    fusion = type("F", (torch.nn.Module,), {"requires": frozenset({"joint"})})()
    cached = BenchModel({"joint": enc}, fusion).encode(
        type("B", (), {"inputs": {"joint": table(RECORDS[:3])}})(), ["joint"])["joint"]
    direct = enc.eval()(enc.preprocess(RECORDS[:3]))
    assert set(cached.extras) == set(direct.extras) == {"text", "image", "joint"}
    for kind in direct.extras:
        assert torch.allclose(cached.extras[kind], direct.extras[kind], atol=1e-5)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip"])
def test_corrupt_entry_is_detected_and_recomputed(tmp_path, damage, caplog):
    store = CacheStore(tmp_path)
    key = cache_key(test=damage)
    value = {"x": torch.arange(1000, dtype=torch.float32)}
    store.get_or_compute(key, lambda: value)
    path = store.path(key)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:-8] + bytes(8))
    calls = []
    again = store.get_or_compute(key, lambda: calls.append(1) or value)
    assert calls == [1] and torch.equal(again["x"], value["x"])
    assert "corrupt" in caplog.text and str(path) in caplog.text
    assert store.read(key) is not None  # rewritten whole


def _slow_compute(root: str, key: str, log: str) -> None:
    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)
        return {"x": torch.ones(3)}

    CacheStore(root).get_or_compute(key, compute)


def test_concurrent_callers_compute_an_entry_once(tmp_path):
    log = tmp_path / "log.txt"
    ctx = mp.get_context("fork")  # spawn would import torch three times over: the locks are what is tested
    procs = [ctx.Process(target=_slow_compute, args=(str(tmp_path / "c"), "k" * 24, str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text().count("computed") == 1


def test_trial_over_frozen_encoders_same_metrics_with_and_without_cache(tmp_path, registry):
    frozen = {"text": {**TINY_TEXT, "options": {**TINY_TEXT["options"], "freeze": "all"}},
              "image": {**TINY_IMAGE, "options": {**TINY_IMAGE["options"], "freeze": "all"}}}
    rows = {}
    for cache in (False, True, True):
        config = tiny_trial(encoders=frozen, fusion="shallow", cache=cache)
        from bench.config.schema import TrialConfig
        config = TrialConfig.model_validate(config).model_dump(mode="json")
        spec = TrialSpec(trial_key(config), {}, {}, config)
        row = run_trial(spec, TrialContext(registry=registry, cache_dir=str(tmp_path))).row
        assert row["status"] == "ok", row["error"]
        rows.setdefault(cache, []).append(row)
    plain, cold, warm = rows[False][0], rows[True][0], rows[True][1]
    assert cold["cache_misses"] > 0 and warm["cache_misses"] == 0 and warm["cache_hits"] > 0
    for metric in ("accuracy", "macro_f1", "top5_accuracy"):
        assert plain[metric] == pytest.approx(cold[metric], abs=1e-6) == pytest.approx(warm[metric], abs=1e-6)


def test_pooled_only_trial_then_sequence_trial_run_the_frozen_encoders_once(tmp_path, registry):
    from bench.config.schema import TrialConfig
    frozen = {"text": {**TINY_TEXT, "options": {**TINY_TEXT["options"], "freeze": "all"}},
              "image": {**TINY_IMAGE, "options": {**TINY_IMAGE["options"], "freeze": "all"}}}
    rows = []
    for fusion in ("shallow", "cross_modal_gated_attention"):  # pooled-only first, then token sequences
        config = TrialConfig.model_validate(tiny_trial(encoders=frozen, fusion=fusion, cache=True)).model_dump(mode="json")
        row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=registry, cache_dir=str(tmp_path))).row
        assert row["status"] == "ok", row["error"]
        rows.append(row)
    assert rows[0]["cache_misses"] > 0
    assert rows[1]["cache_misses"] == 0 and rows[1]["cache_hits"] >= 2  # both encoders' features served


# -- keys follow the pictures' bytes and the settings that shape them -----------------------------
def _image_catalog(tmp_path, **options):
    from PIL import Image

    from bench.api.plugins import get_registry

    folder = tmp_path / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(6):
        if not (folder / f"{i}.bmp").exists():
            Image.new("RGB", (16, 12), (40 * i, 100, 200 - 30 * i)).save(folder / f"{i}.bmp")
        rows.append(f"i{i},item {i},{i}.bmp")
    (tmp_path / "t.csv").write_text("id,title,img\n" + "\n".join(rows) + "\n")
    spec = get_registry().get("dataset", "table")
    opts = {"path": str(tmp_path / "t.csv"), "images": "imgs", "columns": {"id": "id", "image": "img"}, **options}
    return spec.build(opts, None)


def _rewrite_in_place(path, colour):
    """New pixels, same path, same size, same inode, old mtime restored: only the bytes differ."""
    import io
    import os

    from PIL import Image

    before = os.stat(path)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buffer, format="BMP")
    assert len(buffer.getvalue()) == before.st_size
    with open(path, "r+b") as handle:
        handle.write(buffer.getvalue())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (before.st_size, before.st_ino, before.st_mtime_ns)


def test_replaced_picture_changes_the_fingerprint_and_features_are_recomputed(tmp_path):
    store = CacheStore(tmp_path / "cache")
    enc = _encoder("image")

    def features(catalog):
        records = [{"item_id": r["item_id"], "title": r["title"], "image": r["image"], "label": 0, "group": -1}
                   for r in catalog.items.iter_rows(named=True)]
        before = store.misses
        table = TrialInputs(store, catalog.fingerprint, torch.device("cpu"), batch_size=4).features(
            "image", enc, records, with_sequence=False)
        return store.misses - before, table.tensors["cached_pooled"]

    first = _image_catalog(tmp_path)
    computed, pooled = features(first)
    assert computed > 0
    assert features(_image_catalog(tmp_path))[0] == 0  # nothing changed: a hit
    _rewrite_in_place(tmp_path / "imgs" / "2.bmp", (0, 0, 0))
    second = _image_catalog(tmp_path)
    assert second.fingerprint != first.fingerprint
    computed, new_pooled = features(second)
    assert computed > 0
    assert not torch.allclose(new_pooled[2], pooled[2]) and torch.allclose(new_pooled[0], pooled[0])


def test_the_fingerprint_follows_content_not_location(tmp_path):
    """The same catalogue in another folder (another node's copy) has the same fingerprint; swapping
    which item shows which picture, or one picture's bytes, changes it."""
    import shutil

    first = _image_catalog(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert _image_catalog(tmp_path / "b").fingerprint == first.fingerprint
    (tmp_path / "b" / "imgs" / "1.bmp").rename(tmp_path / "b" / "imgs" / "tmp.bmp")
    (tmp_path / "b" / "imgs" / "2.bmp").rename(tmp_path / "b" / "imgs" / "1.bmp")
    (tmp_path / "b" / "imgs" / "tmp.bmp").rename(tmp_path / "b" / "imgs" / "2.bmp")
    assert _image_catalog(tmp_path / "b").fingerprint != first.fingerprint


def test_missing_images_settings_are_part_of_the_keys(tmp_path):
    strict = _image_catalog(tmp_path)
    assert _image_catalog(tmp_path, missing_images="blank").fingerprint != strict.fingerprint
    assert _image_catalog(tmp_path).fingerprint == strict.fingerprint
    blank, error = _encoder("image"), _encoder("image", missing_images="error")
    assert blank.preprocess_fingerprint() != error.preprocess_fingerprint()
    keys = set()
    for encoder in (blank, error):
        store = CacheStore(tmp_path / "c")
        inputs = TrialInputs(store, strict.fingerprint, torch.device("cpu"))
        inputs.inputs("image", encoder, [{"item_id": "i0", "image": strict.items["image"][0]}])
        keys |= {p.name for p in store.root.rglob("*.safetensors")}
    assert len(keys) == 2


def test_manifest_rehashes_only_changed_files(tmp_path, monkeypatch):
    from PIL import Image

    import bench.data.image_files as image_files

    paths = [str(tmp_path / f"{i}.bmp") for i in range(6)]
    for i, path in enumerate(paths):
        Image.new("RGB", (16, 12), (40 * i, 9, 9)).save(path)
    manifest = image_files.ImageManifest(tmp_path / "cache")
    first = manifest.scan(paths)
    assert manifest.hashed == 6 and all(f.digest == image_files.file_digest(p) for p, f in first.items())
    manifest.scan(paths)
    assert manifest.hashed == 6  # written moments ago: within the racy margin, so read again
    monkeypatch.setattr(image_files, "RACY_NS", 0)  # pretend the files are old
    time.sleep(0.05)  # past the file system's clock tick, so a rewrite shows in ctime
    again = manifest.scan(paths)
    assert manifest.hashed == 0 and again == first  # unchanged files: stat only
    _rewrite_in_place(paths[4], (1, 2, 3))
    changed = manifest.scan(paths)
    assert manifest.hashed == 1 and changed[paths[4]].digest != first[paths[4]].digest
    assert changed[paths[4]].digest == image_files.file_digest(paths[4])


def test_a_decode_verdict_is_made_again_when_the_pixel_limit_changes(tmp_path, monkeypatch):
    """The manifest remembers whether a file decodes; that verdict holds only under the pixel limit
    it was made under, so raising MIC_BENCH_MAX_IMAGE_PIXELS (as the error advises) admits the
    picture, and lowering it refuses a picture admitted before."""
    from PIL import Image

    import bench.data.image_files as image_files
    from bench.data.images import MAX_PIXELS_ENV, ImageDecodeError, decode_image

    path = str(tmp_path / "p.png")
    Image.new("RGB", (50, 40), (1, 2, 3)).save(path)  # 2000 pixels
    monkeypatch.setattr(image_files, "RACY_NS", 0)  # the file counts as old: verdicts are reused when valid
    time.sleep(0.05)
    manifest = image_files.ImageManifest(tmp_path / "cache")

    def verdict(limit):
        monkeypatch.setenv(MAX_PIXELS_ENV, str(limit))
        try:  # the decoder itself, without the manifest
            decode_image(path)
            direct = None
        except ImageDecodeError as exc:
            direct = str(exc)
        facts = manifest.scan([path], check=True)[path]
        assert facts.checked and (facts.problem is None) == (direct is None), (limit, facts, direct)
        return facts.problem, manifest.hashed

    problem, hashed = verdict(1999)
    assert "above the limit of 1999" in problem and hashed == 1
    assert verdict(1999) == (problem, 0)  # same limit: the remembered verdict, no read
    assert verdict(2000) == (None, 1)  # limit raised: checked again, and now it is a picture
    assert verdict(2000) == (None, 0)
    problem, hashed = verdict(1500)  # limit lowered: refused again, not admitted from memory
    assert "above the limit of 1500" in problem and hashed == 1


def test_feature_build_with_decode_workers_gives_the_encoders_own_outputs(tmp_path):
    """A frozen image encoder's features, built with preprocessing run ahead in DataLoader workers
    (a 2-CPU trial) and built in the main process (1 CPU), equal the encoder's own forward pass
    over its own preprocessing, batch by batch; and no inputs entry is written to feed them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    records = []
    for i in range(11):  # an odd count: the last chunk is short
        path = tmp_path / f"img{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)).save(path)
        records.append({"item_id": f"i{i}", "title": "t", "image": str(path), "label": 0, "group": -1})
    enc = _encoder("image")
    enc.eval()
    with torch.no_grad():
        expected = torch.cat([enc(enc.preprocess(records[s:s + 4])).pooled for s in range(0, len(records), 4)])
    built = {}
    for cpus in (1, 2):
        store = CacheStore(tmp_path / f"cache{cpus}")
        table = TrialInputs(store, "d", torch.device("cpu"), batch_size=4, cpus=cpus).features(
            "image", enc, records, with_sequence=True)
        assert store.misses == 1 and len(list(store.root.rglob("*.safetensors"))) == 1
        built[cpus] = table(records)
    assert torch.equal(built[1]["cached_pooled"], expected)
    for name, tensor in built[1].items():
        assert torch.equal(built[2][name], tensor), name


def test_a_trial_reads_each_feature_table_from_disk_once(tmp_path):
    """Dev features serve an evaluation after every epoch: the second request is served from the
    table already read, not a second checksummed read."""
    store = CacheStore(tmp_path)
    enc = _encoder()
    inputs = TrialInputs(store, "d", torch.device("cpu"), batch_size=4)
    first = inputs.features("text", enc, RECORDS, with_sequence=True)
    again = inputs.features("text", enc, RECORDS, with_sequence=True)
    assert again is first and (store.misses, store.hits) == (1, 0)
    later = TrialInputs(store, "d", torch.device("cpu"), batch_size=4).features("text", enc, RECORDS, with_sequence=True)
    assert store.hits == 1 and torch.equal(later(RECORDS)["cached_sequence"], first(RECORDS)["cached_sequence"])


# -- bench cache info / clear ----------------------------------------------------------------------
def _invoke(*args):
    from click.testing import CliRunner

    from bench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], obj={}, prog_name="bench")


def test_cache_info_changes_nothing_wherever_it_is_pointed(tmp_path):
    nowhere = tmp_path / "not" / "yet"
    result = _invoke("cache", "info", "--cache-dir", nowhere)
    assert result.exit_code == 0 and "does not exist yet" in result.output
    assert not (tmp_path / "not").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    assert _invoke("cache", "info", "--cache-dir", plain).exit_code == 0
    assert sorted(p.name for p in plain.iterdir()) == ["notes.txt"]  # no marker, no tensors/ folder


def test_cache_clear_removes_links_as_links_and_nothing_they_point_at(tmp_path):
    from bench.storage.paths import CACHE_MARKER, cache_dir

    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "keep.txt").write_text("keep me")
    cache = cache_dir(tmp_path / "cache")
    (cache / "tensors" / "ab").mkdir(parents=True)
    (cache / "tensors" / "ab" / "k.safetensors").write_bytes(b"x")
    (cache / "to_folder").symlink_to(outside, target_is_directory=True)  # rmtree would refuse it half way
    (cache / "tensors" / "to_sub").symlink_to(outside / "sub", target_is_directory=True)
    (cache / "to_file").symlink_to(outside / "sub" / "keep.txt")
    (cache / "dangling").symlink_to(tmp_path / "gone")
    info = _invoke("cache", "info", "--cache-dir", cache)
    assert info.exit_code == 0 and "tensor entries: 1 " in info.output  # links not followed
    result = _invoke("cache", "clear", "--yes", "--cache-dir", cache)
    assert result.exit_code == 0, result.output
    assert [p.name for p in cache.iterdir()] == [CACHE_MARKER]
    assert (outside / "sub" / "keep.txt").read_text() == "keep me"
