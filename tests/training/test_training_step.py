"""The fast paths of a training step: whole-tensor batches, batched augmentation, the chunked LM loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Array3D, ClassLabel, Dataset, Features
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    ViTConfig,
    ViTForImageClassification,
    default_data_collator,
)

from zoo import augment
from zoo.data import embedded
from zoo.data.device import cached_tensor_batches, collate_batch, tensor_batches
from zoo.losses import linear_cross_entropy, reference_cross_entropy
from zoo.models import apply_init
from zoo.training import CausalLM, ImageClassification, MaskedLM, unwrap

# ---------------------------------------------------------------- tensor batches


def _image_dataset(n: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    features = Features({"pixel_values": Array3D(shape=(1, 6, 6), dtype="uint8"),
                         "labels": ClassLabel(names=list("abc"))})
    data = Dataset.from_dict({"pixel_values": rng.integers(0, 256, (n, 1, 6, 6), dtype=np.uint8),
                              "labels": rng.integers(0, 3, n).tolist()}, features=features)
    data.set_format("numpy", columns=["pixel_values"], dtype=np.uint8, output_all_columns=True)
    return data


def _row_batch(dataset, indices):
    return default_data_collator(dataset.__getitems__(indices))


def test_tensor_batches_hold_what_the_collator_would_make():
    images = _image_dataset()
    blocks = Dataset.from_dict({"input_ids": np.arange(60).reshape(6, 10).tolist(),
                                "labels": np.arange(60).reshape(6, 10).tolist()})
    blocks.set_format("numpy")
    for dataset, indices in ((images, [5, 0, 39, 5, 17]), (blocks, [3, 1, 4])):
        fast = tensor_batches(dataset)
        assert fast is not None and len(fast) == len(dataset)
        got, want = collate_batch(fast.__getitems__(indices)), _row_batch(dataset, indices)
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


def test_tensor_batches_refuse_what_they_cannot_hold():
    ragged = Dataset.from_dict({"input_ids": [[1, 2], [3]], "labels": [0, 1]})
    ragged.set_format("numpy")
    assert tensor_batches(ragged) is None
    transformed = _image_dataset().with_transform(lambda batch: batch)
    assert tensor_batches(transformed) is None
    assert tensor_batches(_image_dataset(), max_bytes=10) is None  # too large for the host budget


# ---------------------------------------------------------------- augmentation


def _unit_images(b=16, c=3, h=12, w=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return augment.to_unit(torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=generator))


@pytest.mark.parametrize("native", [8, 28])
def test_crop_resizes_from_any_resolution_and_is_seeded(native):
    crop = augment.RandomResizedCropFlip(28, (0.3, 1.0), hflip=True)
    images = _unit_images(h=native, w=native)
    torch.manual_seed(3)
    first = crop(images)
    torch.manual_seed(3)
    again = crop(images)
    torch.manual_seed(4)
    other = crop(images)
    assert first.shape == (16, 3, 28, 28)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_full_crop_is_the_image_or_its_mirror():
    crop = augment.RandomResizedCropFlip(12, (1.0, 1.0), ratio=(1.0, 1.0), hflip=True)
    images = _unit_images()
    torch.manual_seed(0)
    out = crop(images)
    same = torch.isclose(out, images, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(out, images.flip(-1), atol=1e-5).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_random_erasing_erases_one_box_per_chosen_image():
    images = torch.ones(64, 1, 20, 20)
    torch.manual_seed(0)
    out = augment.RandomErasing(p=0.5, scale=(0.02, 0.33))(images)
    erased = (out == 0).flatten(1).float().mean(1)
    chosen = erased > 0
    assert 10 < int(chosen.sum()) < 54  # about half the images
    assert erased[chosen].min() >= 0.005 and erased[chosen].max() <= 0.45  # (areas are rounded to whole pixels)
    for image in out[chosen][:, 0]:  # the erased pixels form one rectangle
        rows, cols = torch.nonzero(image == 0, as_tuple=True)
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


@pytest.mark.parametrize("mixup,cutmix", [(0.0, 1.0), (0.8, 0.0)])
def test_mixing_keeps_images_in_range_and_targets_consistent(mixup, cutmix):
    images, labels = _unit_images(b=32), torch.arange(32) % 4
    torch.manual_seed(0)
    mixed, targets = augment.BatchMixer(4, 0.1, mixup, cutmix, prob=1.0)(images, labels)
    assert mixed.shape == images.shape and mixed.min() >= 0 and mixed.max() <= 1
    assert torch.allclose(targets.sum(1), torch.ones(32))
    assert not torch.equal(mixed, images)
    if cutmix:  # each image's weight of its own label is the share of its pixels that stayed
        stayed = (mixed == images).all(1).flatten(1).float().mean(1)  # (a pixel moved if any channel did)
        own = targets.gather(1, labels[:, None]).squeeze(1)
        partner_same = torch.isclose(own, torch.full_like(own, 1 - 0.1 + 0.1 / 4))
        expected = stayed * (1 - 0.1) + 0.1 / 4
        assert torch.allclose(own[~partner_same], expected[~partner_same], atol=1e-5)


def test_simclr_views_keep_shape_and_range():
    views = augment.simclr_augment(16, 3, 0.3, True, 0.5)
    images = _unit_images(h=10, w=10)
    torch.manual_seed(0)
    out = views(images)
    assert out.shape == (16, 3, 16, 16) and out.min() >= 0 and out.max() <= 1
    gray = augment.RandomGrayscale(p=1.0)(images)
    assert torch.allclose(gray[:, 0], gray[:, 2])
    flat = torch.full((4, 3, 9, 9), 0.25)
    assert torch.allclose(augment.RandomGaussianBlur(5, (0.5, 2.0), p=1.0)(flat), flat, atol=1e-6)
    assert torch.allclose(augment._rotate_hue(flat, torch.full((4,), 1.0)), flat, atol=1e-5)  # gray has no hue


# ---------------------------------------------------------------- the chunked LM loss


def test_linear_cross_entropy_matches_the_full_logits():
    torch.manual_seed(0)
    hidden = torch.randn(70, 8, requires_grad=True)
    weight = torch.randn(33, 8, requires_grad=True)
    labels = torch.randint(0, 33, (70,))
    labels[::5] = -100
    want_loss, want_hits, want_predictions = reference_cross_entropy(hidden, weight, labels)
    want_grads = torch.autograd.grad(2 * want_loss, (hidden, weight))
    for chunk in (33 * 7, 33 * 1000):  # several chunks, and one
        loss, hits, predictions = linear_cross_entropy(hidden, weight, labels, chunk_elements=chunk)
        grads = torch.autograd.grad(2 * loss, (hidden, weight))
        assert torch.allclose(loss, want_loss, atol=1e-6) and int(hits) == int(want_hits)
        assert torch.equal(predictions, want_predictions)
        assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(grads, want_grads))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = linear_cross_entropy(hidden, weight, labels)
    assert loss.dtype == torch.float32 and abs(float(loss) - float(want_loss)) < 0.05 * float(want_loss)


def test_causal_lm_objective_matches_the_stock_loss():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=12, n_embd=16, n_layer=1, n_head=2)).eval()
    ids = torch.randint(0, 50, (3, 12))
    wrapped = torch.nn.parallel.DataParallel(model)  # the objective finds the head inside wrappers
    loss, hits, count = CausalLM().training_loss(wrapped, {"input_ids": ids, "labels": ids})
    stock = model(input_ids=ids, labels=ids)
    assert torch.allclose(loss, stock.loss, atol=1e-5) and int(count) == 3 * 11
    assert int(hits) == int((stock.logits[:, :-1].argmax(-1) == ids[:, 1:]).sum())
    _, predictions, labels = CausalLM().eval_step(model, {"input_ids": ids, "labels": ids})
    assert predictions.shape == labels.shape == (3, 11)
    assert unwrap(wrapped) is model


def test_masked_lm_head_runs_on_the_masked_tokens_only():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0))
    ids = torch.randint(0, 60, (3, 16))
    labels = torch.where(torch.rand(3, 16) < 0.2, ids, torch.full_like(ids, -100))
    rows = []
    model.cls.register_forward_hook(lambda _, args, out: rows.append(args[0].shape))
    wrapped = torch.nn.parallel.DataParallel(model)
    loss, hits, count = MaskedLM().training_loss(wrapped, {"input_ids": ids, "labels": labels})
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    masked = int((labels != -100).sum())
    assert rows[-1] == (masked, 16) and int(count) == masked  # the head saw the masked tokens' rows only
    stock = model(input_ids=ids, labels=labels)  # the stock loss over every token's logits
    want = torch.autograd.grad(stock.loss, list(model.parameters()), allow_unused=True)
    assert rows[-1] == (3, 16, 16)
    assert torch.allclose(loss, stock.loss, atol=1e-6)
    for got, expected in zip(grads, want):
        assert (got is None) == (expected is None)
        if got is not None:
            assert torch.allclose(got, expected, atol=1e-6)
    mask = labels != -100
    assert int(hits) == int((stock.logits.argmax(-1)[mask] == labels[mask]).sum())
    _, predictions, eval_labels = MaskedLM().eval_step(model, {"input_ids": ids, "labels": labels})
    assert predictions.shape == labels.shape and eval_labels is labels
    assert torch.equal(predictions[mask], stock.logits.argmax(-1)[mask])
    assert not model.cls._forward_pre_hooks  # the selection is removed after each call


# ---------------------------------------------------------------- training still learns


def _train(model, objective, batches, steps, lr):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        loss, _, _ = objective.training_loss(model, batches(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def test_supervised_recipe_still_learns_mnist():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    images, labels, _ = embedded.mnist5k()
    order = torch.randperm(len(labels))[:1024]
    pixels = torch.as_tensor(images)[order][:, None].expand(-1, 3, -1, -1)
    targets = torch.as_tensor(labels)[order]
    config = ViTConfig(image_size=28, patch_size=7, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, num_labels=10)
    model = ViTForImageClassification(config)
    apply_init(model, "kaiming_normal")
    zoo_args = SimpleNamespace(augment=True, crop_scale_min=0.6, hflip=False, random_erasing=0.25,
                               label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=0.2, mix_prob=0.5,
                               mix_switch_prob=0.5)  # the tiny recipe's augmentation
    objective = ImageClassification(zoo_args, 28, 10, 0.5, 0.5)
    losses = _train(model, objective, lambda s: {"pixel_values": pixels[(s % 16) * 64:][:64],
                                                 "labels": targets[(s % 16) * 64:][:64]}, 80, 2e-3)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    with torch.no_grad():
        loss, predictions, _ = objective.eval_step(model.eval(), {"pixel_values": pixels, "labels": targets})
    accuracy = float((predictions == targets).float().mean())
    assert last < first - 0.3 and accuracy > 0.4 and math.isfinite(float(loss)), (first, last, accuracy)


def test_members_share_the_tensors_of_the_same_split():
    images = _image_dataset()
    first = cached_tensor_batches(images, torch.device("cpu"))
    assert cached_tensor_batches(images, torch.device("cpu")) is first
    subset = cached_tensor_batches(images.select(range(10)), torch.device("cpu"))
    assert subset is not first and len(subset) == 10
