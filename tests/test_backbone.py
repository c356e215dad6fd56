"""ClipBackbone: identity hooks reproduce open_clip exactly; hooks really act; sizes; weight errors."""

import hashlib
import time

import pytest
import torch

from petl_bench import tinyclip
from petl_bench.backbone import IDENTITY, TINY_CONFIG, ClipBackbone, Hooks
from petl_bench.errors import UserError

PROMPTS = ["a photo of a dog.", "a drawing of an alarm clock.", "sketch"]


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- identity hooks == open_clip ------------------------------------------------------------------
@pytest.mark.parametrize("hooks", [IDENTITY, Hooks()], ids=["IDENTITY", "Hooks()"])
def test_tiny_identity_hooks_equal_open_clip(tiny_backbone, hooks):
    images, tokens = _images(2, 32), tiny_backbone.tokenize(PROMPTS)
    with torch.no_grad():
        image, ref_image = tiny_backbone.encode_image(images, hooks, "t"), tiny_backbone.model.encode_image(images)
        text, ref_text = tiny_backbone.encode_text(tokens, hooks, "t"), tiny_backbone.model.encode_text(tokens)
    assert image.shape == ref_image.shape == (2, 64)
    assert text.shape == ref_text.shape == (3, 64)
    assert torch.allclose(image, ref_image, atol=1e-5)
    assert torch.allclose(text, ref_text, atol=1e-5)
    # Different prompts give different features: the comparison is not between constants.
    assert not torch.allclose(text[0], text[1], atol=1e-3)


def test_vit_b16_identity_hooks_equal_open_clip(vit_b16):
    images, tokens = _images(1, 224), vit_b16.tokenize(["a photo of a bike."])
    assert tokens.shape == (1, 77)
    with torch.no_grad():
        image, ref_image = vit_b16.encode_image(images), vit_b16.model.encode_image(images)
        text, ref_text = vit_b16.encode_text(tokens), vit_b16.model.encode_text(tokens)
    assert image.shape == ref_image.shape == (1, 512)
    assert text.shape == ref_text.shape == (1, 512)
    assert torch.allclose(image, ref_image, atol=1e-5)
    assert torch.allclose(text, ref_text, atol=1e-5)


# -- sizes and freezing ---------------------------------------------------------------------------
def test_vit_b16_sizes(vit_b16):
    assert (vit_b16.text_width, vit_b16.vision_width) == (512, 768)
    assert (vit_b16.text_depth, vit_b16.vision_depth) == (12, 12)
    assert vit_b16.context_length == 77
    assert vit_b16.image_size == 224
    assert sum(p.numel() for p in vit_b16.parameters()) == 149_620_737
    assert vit_b16.name == "ViT-B-16" and vit_b16.pretrained is None


def test_tiny_sizes(tiny_backbone):
    b = tiny_backbone
    assert (b.text_width, b.vision_width, b.text_depth, b.vision_depth, b.context_length, b.image_size) == (
        48,
        64,
        3,
        3,
        32,
        32,
    )
    assert b.tokenize(["a"]).shape == (1, 32)


def test_backbones_are_frozen(tiny_backbone, vit_b16):
    for backbone in (tiny_backbone, vit_b16):
        params = list(backbone.parameters())
        assert params
        assert not any(p.requires_grad for p in params)


# -- hooks are called, in order, and change the result --------------------------------------------
class Recorder(Hooks):
    def __init__(self):
        self.calls = []

    def text_embed(self, emb, tokens, task):
        self.calls.append(("text_embed", tuple(emb.shape), tuple(tokens.shape), task))
        return emb

    def text_layer(self, i, x, task):
        self.calls.append(("text_layer", i, tuple(x.shape), task))
        return x

    def vision_embed(self, x, task):
        self.calls.append(("vision_embed", tuple(x.shape), task))
        return x

    def vision_layer(self, i, x, task):
        self.calls.append(("vision_layer", i, tuple(x.shape), task))
        return x

    def vision_post(self, x):
        self.calls.append(("vision_post", tuple(x.shape)))
        return x


def test_hooks_called_in_order_with_shapes_and_task(tiny_backbone):
    hooks = Recorder()
    text = tiny_backbone.tokenize(PROMPTS)
    with torch.no_grad():
        tiny_backbone.encode_image(_images(2, 32), hooks, "art")
        tiny_backbone.encode_text(text, hooks, "art")
    tokens = 1 + (32 // 8) ** 2  # class token + 4x4 patches
    context = int(text.argmax(-1).max()) + 1  # the text tower runs up to the longest prompt's EOT
    assert context < 32
    assert hooks.calls == [
        ("vision_embed", (2, tokens, 64), "art"),
        *[("vision_layer", i, (2, tokens, 64), "art") for i in range(3)],
        ("vision_post", (2, tokens, 64)),
        ("text_embed", (3, context, 48), (3, context), "art"),
        *[("text_layer", i, (3, context, 48), "art") for i in range(3)],
    ]


class AddAtLayer(Hooks):
    """Adds a ramp over the width before block `layer`. (A constant would be a no-op: every block and
    the final norm start with a LayerNorm, which removes a shift shared by all features.)"""

    def __init__(self, layer: int):
        self.layer = layer

    def _add(self, i, x):
        return x + torch.linspace(-1.0, 1.0, x.shape[-1]) if i == self.layer else x

    def vision_layer(self, i, x, task):
        return self._add(i, x)

    def text_layer(self, i, x, task):
        return self._add(i, x)


@pytest.mark.parametrize("layer", [0, 2])
def test_layer_hook_changes_features(tiny_backbone, layer):
    images, tokens = _images(2, 32), tiny_backbone.tokenize(PROMPTS)
    with torch.no_grad():
        base_image, base_text = tiny_backbone.encode_image(images), tiny_backbone.encode_text(tokens)
        image = tiny_backbone.encode_image(images, AddAtLayer(layer))
        text = tiny_backbone.encode_text(tokens, AddAtLayer(layer))
    assert image.shape == base_image.shape and text.shape == base_text.shape
    assert not torch.allclose(image, base_image, atol=1e-3)
    assert not torch.allclose(text, base_text, atol=1e-3)


def test_hook_at_a_layer_that_does_not_exist_changes_nothing(tiny_backbone):
    images = _images(2, 32)
    with torch.no_grad():
        assert torch.allclose(tiny_backbone.encode_image(images, AddAtLayer(3)), tiny_backbone.encode_image(images))


class AppendTokens(Hooks):
    """Deep-prompt style: 2 extra tokens enter after the embedding and are stripped before pooling."""

    def __init__(self):
        self.seen = []

    def vision_embed(self, x, task):
        return torch.cat([x, torch.ones(x.shape[0], 2, x.shape[2])], dim=1)

    def vision_layer(self, i, x, task):
        self.seen.append(x.shape[1])
        return x

    def vision_post(self, x):
        return x[:, :-2]


def test_appended_vision_tokens_are_attended_and_stripped(tiny_backbone):
    images, hooks = _images(2, 32), AppendTokens()
    with torch.no_grad():
        base = tiny_backbone.encode_image(images)
        prompted = tiny_backbone.encode_image(images, hooks)
    assert hooks.seen == [19, 19, 19]
    assert prompted.shape == base.shape
    assert not torch.allclose(prompted, base, atol=1e-3)


def test_text_embed_hook_replaces_token_embeddings(tiny_backbone):
    class Context(Hooks):
        def text_embed(self, emb, tokens, task):
            ctx = torch.full((emb.shape[0], 2, emb.shape[2]), 0.1)
            return torch.cat([emb[:, :1], ctx, emb[:, 3:]], dim=1)

    tokens = tiny_backbone.tokenize(["X X dog.", "X X cat."])
    with torch.no_grad():
        assert not torch.allclose(
            tiny_backbone.encode_text(tokens, Context()), tiny_backbone.encode_text(tokens), atol=1e-3
        )


# -- weights: local files, tags, offline errors ---------------------------------------------------
def test_offline_missing_weights_fail_fast_in_one_line(empty_weight_caches):
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        ClipBackbone.from_pretrained("ViT-B-16", "openai")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "\n" not in message
    for word in ("ViT-B-16", "openai", "--pretrained"):
        assert word in message


def test_missing_weights_without_offline_mode_fail_in_seconds_quietly(empty_weight_caches, monkeypatch, capfd):
    # Regression (fixed): without HF_HUB_OFFLINE the hub client retried for ~60 s, logging 45 lines.
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        ClipBackbone.from_pretrained("ViT-B-16", "openai")
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value) and "no answer from http://127.0.0.1:9" in str(info.value)
    assert capfd.readouterr() == ("", "")


def test_weights_that_would_run_code_are_refused(tmp_path, crafted_file):
    path = tmp_path / "crafted.pt"
    marker = crafted_file(path, state_dict={})
    with pytest.raises(UserError, match="could run code") as info:
        ClipBackbone.from_pretrained("tiny", str(path))
    assert str(path) in str(info.value) and not marker.exists()
    torch.load(path, weights_only=False)  # what the old loader did
    assert marker.exists()


def _torchscript_archive(weights: dict, path):
    """A TorchScript archive holding these weights, as OpenAI's releases hold theirs."""
    root = torch.nn.Module()
    for key, tensor in weights.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, torch.nn.Module())
            node = getattr(node, name)
        node.register_buffer(leaf, tensor)
    torch.jit.script(root).save(str(path))
    return path


def test_a_torchscript_archive_loads_only_as_openai_s_own_release(tmp_path, monkeypatch):
    from petl_bench import weights as weight_files

    weights = ClipBackbone.from_config(TINY_CONFIG).model.state_dict()
    path = _torchscript_archive(weights, tmp_path / "tiny-openai.pt")
    with pytest.raises(UserError, match="TorchScript"):
        ClipBackbone.from_pretrained("tiny", str(path))
    # OpenAI's release is recognised by the sha256 in open_clip's URL for the model's `openai` tag.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(weight_files, "_openai_url", lambda arch: f"https://example.org/models/{digest}/{path.name}")
    loaded = ClipBackbone.from_pretrained("tiny", str(path)).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


# -- weights: the activation (QuickGELU or GELU) comes from the weights and the tag, never a name ----
ARCH = "tiny-vit"  # the tiny CLIP registered in open_clip as ViT-B-16 is, with tags of both activations


@pytest.fixture
def registered_tiny(monkeypatch):
    """`tiny-vit` (and `tiny-vit-quickgelu`) in open_clip's model configs, and its pretrained
    registry: an `openai` tag (QuickGELU) whose URL names a release's SHA-256 and file name as
    OpenAI's do, and a GELU tag. -> release(path): make the file at `path` the `openai` release."""
    import copy

    import open_clip

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, ARCH, copy.deepcopy(TINY_CONFIG))
    monkeypatch.setitem(
        open_clip.factory._MODEL_CONFIGS, f"{ARCH}-quickgelu", {**copy.deepcopy(TINY_CONFIG), "quick_gelu": True}
    )
    tags = {"openai": {"url": "", "quick_gelu": True}, "laion2b": {"hf_hub": "laion/tiny-vit/"}}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, ARCH, tags)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, f"{ARCH}-quickgelu", {"openai": tags["openai"]})

    def release(path):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        tags["openai"]["url"] = f"https://openaipublic.azureedge.net/clip/models/{digest}/{ARCH}.pt"

    return release


def _open_clip_features(weights: dict, quick_gelu: bool) -> torch.Tensor:
    """open_clip's own text features for these weights with this activation."""
    import open_clip

    model = open_clip.CLIP(**TINY_CONFIG, quick_gelu=quick_gelu)
    model.load_state_dict(weights)
    with torch.no_grad():
        return model.encode_text(open_clip.SimpleTokenizer(context_length=32)(PROMPTS))


def _features(backbone: ClipBackbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone.encode_text(backbone.tokenize(PROMPTS))


def test_openai_s_release_runs_quickgelu_whatever_its_file_is_named(tmp_path, registered_tiny):
    # Regression (fixed): QuickGELU was switched on by the file name (the release's, `tiny-vit.pt` here);
    # the release renamed was refused as a TorchScript archive.
    weights = ClipBackbone.from_config(TINY_CONFIG).model.state_dict()
    release = _torchscript_archive(weights, tmp_path / "release.pt")
    registered_tiny(release)
    quick, plain = _open_clip_features(weights, quick_gelu=True), _open_clip_features(weights, quick_gelu=False)
    assert not torch.allclose(quick, plain, atol=1e-4)  # the activation shows in the features
    for name in ("renamed-download.pt", "ViT-B-16.pt", f"{ARCH}.pt"):
        path = tmp_path / name
        path.write_bytes(release.read_bytes())
        backbone = ClipBackbone.from_pretrained(ARCH, str(path))
        assert torch.allclose(_features(backbone), quick, atol=1e-5), name
        assert backbone.quick_gelu, name


def test_a_file_that_cannot_be_told_is_refused_in_one_line_not_guessed(tmp_path, registered_tiny):
    # Regression (fixed): GELU weights under the release's name loaded with QuickGELU, and the hub's
    # `open_clip_model.safetensors` passed as a path loaded with GELU, whatever its weights were.
    from safetensors.torch import save_file

    weights = ClipBackbone.from_config(TINY_CONFIG).model.state_dict()
    registered_tiny(_torchscript_archive(weights, tmp_path / "release.pt"))
    named_like_the_release = tmp_path / f"{ARCH}.pt"
    torch.save({"state_dict": weights}, named_like_the_release)
    hub_file = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(hub_file))
    for path in (named_like_the_release, hub_file):
        with pytest.raises(UserError) as info:
            ClipBackbone.from_pretrained(ARCH, str(path))
        message = str(info.value)
        assert "\n" not in message and str(path) in message
        for words in (f"--model {ARCH}-quickgelu", "--set model.quick_gelu=false", "--pretrained openai"):
            assert words in message


def test_a_stated_activation_loads_a_file_with_it(tmp_path, registered_tiny):
    from safetensors.torch import save_file

    weights = ClipBackbone.from_config(TINY_CONFIG).model.state_dict()
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    gelu = ClipBackbone.from_pretrained(ARCH, str(path), quick_gelu=False)
    quick = ClipBackbone.from_pretrained(f"{ARCH}-quickgelu", str(path))
    assert (gelu.quick_gelu, quick.quick_gelu) == (False, True)
    assert torch.allclose(_features(gelu), _open_clip_features(weights, quick_gelu=False), atol=1e-5)
    assert torch.allclose(_features(quick), _open_clip_features(weights, quick_gelu=True), atol=1e-5)
    assert ClipBackbone.from_pretrained(ARCH, str(path), quick_gelu=True).quick_gelu
    with pytest.raises(UserError, match=f"model.quick_gelu=false contradicts {ARCH}-quickgelu"):
        ClipBackbone.from_pretrained(f"{ARCH}-quickgelu", str(path), quick_gelu=False)


def test_vit_b16_files_are_told_by_open_clip_s_registry_before_loading(tmp_path):
    # ViT-B-16 has QuickGELU tags (openai, dfn2b, metaclip) and GELU ones (laion, datacomp): a file
    # is refused before its weights are read, whatever its name; a tag takes its registry entry.
    import open_clip

    from petl_bench.weights import trained_with_quick_gelu

    for name in ("ViT-B-16.pt", "open_clip_model.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"not read")
        with pytest.raises(UserError, match=r"cannot tell whether .* --model ViT-B-16-quickgelu"):
            ClipBackbone.from_pretrained("ViT-B-16", str(path))
    config = open_clip.get_model_config("ViT-B-16")
    for tag, quick in (("openai", True), ("dfn2b", True), ("laion2b_s34b_b88k", False)):
        assert (
            trained_with_quick_gelu("ViT-B-16", config, "cached", open_clip.get_pretrained_cfg("ViT-B-16", tag), None)
            is quick
        )


def test_a_sweep_worker_keeps_a_backbone_per_activation(tiny_checkpoint, monkeypatch):
    from petl_bench import run

    monkeypatch.setattr(run, "_kept_backbones", {})
    assert not run.load_backbone("tiny", str(tiny_checkpoint)).quick_gelu
    assert run.load_backbone("tiny", str(tiny_checkpoint), quick_gelu=True).quick_gelu


@pytest.mark.parametrize("arch", ["tiny", "ViT-B-16"])
def test_missing_local_checkpoint_names_the_path(tmp_path, arch):
    path = tmp_path / "nowhere" / "weights.pt"
    with pytest.raises(UserError, match="not found") as info:
        ClipBackbone.from_pretrained(arch, str(path))
    assert str(path) in str(info.value)


def test_unknown_tag_lists_the_tags():
    with pytest.raises(UserError) as info:
        ClipBackbone.from_pretrained("ViT-B-16", "no_such_tag")
    message = str(info.value)
    assert "no_such_tag" in message
    assert "openai" in message and "laion2b_s34b_b88k" in message


def test_tiny_has_no_tags():
    with pytest.raises(UserError, match="tiny"):
        ClipBackbone.from_pretrained("tiny", "openai")


def test_unknown_arch():
    with pytest.raises(UserError, match="ViT-Q-99"):
        ClipBackbone.from_pretrained("ViT-Q-99", None)


def test_local_checkpoint_round_trip(tiny_checkpoint):
    torch.manual_seed(123)
    expected = ClipBackbone.from_config(TINY_CONFIG).model.state_dict()  # what the fixture saved
    loaded = ClipBackbone.from_pretrained("tiny", str(tiny_checkpoint))
    assert loaded.pretrained == str(tiny_checkpoint)
    state = loaded.model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_checkpoint_of_another_model_is_a_user_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"foo": torch.zeros(3)}}, path)
    with pytest.raises(UserError, match="could not load weights"):
        ClipBackbone.from_pretrained("tiny", str(path))


@pytest.mark.parametrize("content", [b"", b"\xfb not a checkpoint at all " * 8], ids=["empty", "garbage"])
def test_unreadable_checkpoint_file_is_a_user_error(tmp_path, content):
    # Regression (fixed): torch.load raises pickle.UnpicklingError / EOFError here, which from_pretrained does not
    # catch (it catches RuntimeError, KeyError, ValueError, OSError): the CLI shows a traceback.
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="could not load weights"):
        ClipBackbone.from_pretrained("tiny", str(path))


def test_tinyclip_save_is_atomic_and_loadable(tmp_path, tiny_backbone):
    path = tmp_path / "sub" / "w.pt"
    tinyclip.save(tiny_backbone, path)
    assert path.is_file() and not path.with_suffix(".pt.tmp").exists()
    assert torch.load(path, weights_only=True)["state_dict"].keys() == tiny_backbone.model.state_dict().keys()
