"""Each update rule, proved: SDS never touches the UNet's backward, directions match
independent autograd, each method moves its objective the stated way, and reference
mode costs more without changing the update.
"""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from cloakbench.protections import PROTECTIONS
from cloakbench.protections.engine import StepDraws
from cloakbench.protections.targets import text_image


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- independent reference computations (diffusers' own modules, not protections.losses) ---
def encode(model, images, latent_noise=None):
    dist = model.vae.encode(images * 2 - 1).latent_dist
    unscaled = dist.mean if latent_noise is None else dist.mean + dist.std * latent_noise
    return unscaled * model.scaling_factor


def predict(model, latents, timesteps, noise, prompt):
    noisy = model.scheduler.add_noise(latents, noise, timesteps)
    embeds = model.encode_prompt(prompt, latents.shape[0])
    return model.unet(noisy, timesteps, encoder_hidden_states=embeds).sample


def fixed_draws(model, count, *, seed=11, sample=True):
    g = generator(seed)
    latent = (count, 4, 8, 8)
    return StepDraws(
        timesteps=torch.randint(0, model.num_train_timesteps, (count,), generator=g),
        noise=torch.randn(latent, generator=g),
        latent_noise=torch.randn(latent, generator=g) if sample else None,
        target_noise=torch.randn(latent, generator=g) if sample else None,
    )


def direction_of(name, model, images, draws, **overrides):
    protection = PROTECTIONS.get(name).from_overrides({"random_start": "false", **overrides})
    state = protection.prepare(images, model, generator=generator(0))
    adversarial = state.adversarial.detach().requires_grad_(True)
    direction, _ = protection.direction(state, adversarial, draws)
    return direction


# -- SDS: no UNet backward, no UNet activation saved ------------------------------------
class UNetWatch:
    """Hooks on every UNet module: grad mode, grad_fn of outputs, tensors saved meanwhile,
    and whether a weight gradient is accumulated (the reference's cost)."""

    def __init__(self, unet):
        self.depth = 0
        self.forwards = 0
        self.saved_inside = 0
        self.saved_total = 0
        self.grad_outputs = 0
        self.weight_grads = 0
        self.checkpointing: set[bool] = set()  # the UNet's gradient checkpointing, seen at each forward
        self.weight = unet.conv_in.weight
        self.grad_hook = None
        self.handles = [unet.register_forward_pre_hook(self._enter), unet.register_forward_hook(self._leave)]
        for module in unet.modules():
            self.handles.append(module.register_forward_hook(self._check))

    def _enter(self, module, args):
        self.depth += 1
        self.forwards += 1
        self.checkpointing.add(bool(module.is_gradient_checkpointing))
        # Weights only require grad inside a reference-mode step, so hook them from here.
        if self.weight.requires_grad and self.grad_hook is None:
            self.grad_hook = self.weight.register_post_accumulate_grad_hook(self._weight_grad)

    def _weight_grad(self, parameter):
        self.weight_grads += 1

    def _leave(self, module, args, output):
        self.depth -= 1

    def _check(self, module, args, output):
        if isinstance(output, torch.Tensor):
            tensors = [output]
        elif isinstance(output, (tuple, list)):
            tensors = [t for t in output if isinstance(t, torch.Tensor)]
        else:
            tensors = [t for t in vars(output).values() if isinstance(t, torch.Tensor)]
        if torch.is_grad_enabled() or any(t.grad_fn is not None for t in tensors):
            self.grad_outputs += 1

    def pack(self, tensor):
        self.saved_total += 1
        if self.depth:
            self.saved_inside += 1
        return tensor

    def close(self):
        for handle in self.handles + ([self.grad_hook] if self.grad_hook is not None else []):
            handle.remove()


def watch_one_step(name, model, images):
    protection = PROTECTIONS.get(name).from_overrides({"steps": "1"})
    state = protection.prepare(images, model, generator=generator(0))
    watch = UNetWatch(model.unet)
    try:
        with torch.autograd.graph.saved_tensors_hooks(watch.pack, lambda t: t):
            protection.step(state)
    finally:
        watch.close()
    return watch


@pytest.mark.parametrize("name", ["sds+", "sds-", "sdst-"])
def test_sds_never_backpropagates_through_the_unet(name, tiny_model, clean8):
    watch = watch_one_step(name, tiny_model, clean8)
    assert watch.forwards == 1, "the UNet must run (forward only) once per step"
    assert watch.grad_outputs == 0, "a UNet module ran with autograd on"
    assert watch.saved_inside == 0, "tensors were saved for backward inside the UNet"
    assert watch.saved_total > 0, "the encoder's backward must still save its activations"


def test_the_unet_watch_sees_advdm_backpropagating(tiny_model, clean8):
    # The instrument can fail: AdvDM does backpropagate through the UNet.
    watch = watch_one_step("advdm", tiny_model, clean8)
    assert watch.grad_outputs > 0 and watch.saved_inside > 0


# -- directions equal independent autograd with t and ε fixed -----------------------------
@pytest.mark.parametrize("name,sign", [("sds-", -1.0), ("sds+", 1.0)])
def test_sds_direction_is_the_encoder_vjp(name, sign, tiny_model, clean8):
    draws = fixed_draws(tiny_model, 2)
    got = direction_of(name, tiny_model, clean8, draws)

    with torch.no_grad():
        latents = encode(tiny_model, clean8, draws.latent_noise)
        residual = predict(tiny_model, latents, draws.timesteps, draws.noise, "a photo") - draws.noise
    _, vjp = torch.autograd.functional.vjp(lambda x: encode(tiny_model, x, draws.latent_noise), clean8, residual)
    assert vjp.abs().max() > 0
    torch.testing.assert_close(got, sign * vjp, rtol=1e-4, atol=1e-6 * float(vjp.abs().max()))


def test_sdst_direction_adds_the_textural_gradient(tiny_model, clean8):
    draws = fixed_draws(tiny_model, 2, sample=False)
    got = direction_of("sdst-", tiny_model, clean8, draws, latent="mean")

    with torch.no_grad():
        latents = encode(tiny_model, clean8)
        residual = predict(tiny_model, latents, draws.timesteps, draws.noise, "a photo") - draws.noise
        target = encode(tiny_model, text_image(64, 64).unsqueeze(0))

    def objective(x):  # r·<z, ε̂−ε> (constant ε̂) + L_T, whose x-gradient is the SDST vector
        z = encode(tiny_model, x)
        return 5.0 * (z * residual).sum() + ((z - target) ** 2).sum()

    x = clean8.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(objective(x), x)
    torch.testing.assert_close(got, -expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("name,sign", [("advdm", 1.0), ("advdm-", -1.0)])
def test_advdm_direction_is_the_autograd_of_the_semantic_loss(name, sign, tiny_model, clean8):
    draws = fixed_draws(tiny_model, 2)
    got = direction_of(name, tiny_model, clean8, draws)

    x = clean8.clone().requires_grad_(True)
    latents = encode(tiny_model, x, draws.latent_noise)
    predicted = predict(tiny_model, latents, draws.timesteps, draws.noise, "a photo")
    per_image = F.mse_loss(predicted, draws.noise, reduction="none").flatten(1).mean(1)
    (expected,) = torch.autograd.grad(per_image.sum(), x)
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, sign * expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_mist_direction_is_the_autograd_of_its_objective(tiny_model, clean8):
    draws = fixed_draws(tiny_model, 2, sample=False)
    got = direction_of("mist", tiny_model, clean8, draws, latent="mean")

    x = clean8.clone().requires_grad_(True)
    latents = encode(tiny_model, x)
    with torch.no_grad():
        target = encode(tiny_model, text_image(64, 64).unsqueeze(0))
    predicted = predict(tiny_model, latents, draws.timesteps, draws.noise, "a photo")
    semantic = F.mse_loss(predicted, draws.noise, reduction="none").flatten(1).mean(1)
    textural = ((latents - target) ** 2).flatten(1).sum(1)
    # The reference's 1e4 at its latent of 4·64·64 elements, scaled to this one's (8·8·4 at 64²).
    weight = 1e4 * latents[0].numel() / (4 * 64 * 64)
    (expected,) = torch.autograd.grad((textural - weight * semantic).sum(), x)
    torch.testing.assert_close(got, -expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


# -- each method moves its objective the stated way, on average over many (t, ε) -----------
@pytest.fixture(scope="module")
def sensitive_model(tiny_model):
    """tiny-random with a 10x output layer: the random UNet is otherwise so flat in ``z``
    that L_S moves by 1e-4, below the noise of any affordable estimate."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.unet.conv_out.weight.mul_(10.0)
        model.unet.conv_out.bias.mul_(10.0)
    return model


class OriginDenoiser(torch.nn.Module):
    """The exact denoiser for data concentrated at the origin: ``ε̂ = z_t / √(1 − ᾱ_t)``.

    Score distillation assumes a denoiser whose Jacobian acts like a positive multiple
    of the identity (true of a trained model, not of random weights). This one is the
    optimal denoiser of a (trivial) data distribution, its Jacobian is ``I/√(1 − ᾱ_t)``,
    and ``ε̂ − ε = √ᾱ_t z / √(1 − ᾱ_t)``: the SDS direction is exactly a positive multiple
    of the true gradient of ``L_S``, so the test checks SDS's signs and plumbing rather
    than the luck of random weights.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.clone())
        self.unused = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, sample, timestep, encoder_hidden_states=None, **_):
        alphas = self.alphas_cumprod[timestep].view(-1, 1, 1, 1)
        return SimpleNamespace(sample=sample / (1 - alphas).sqrt())


@pytest.fixture(scope="module")
def origin_denoiser_model(tiny_model):
    return dataclasses.replace(tiny_model, unet=OriginDenoiser(tiny_model.alphas_cumprod), _prompt_cache={})


def expected_semantic_loss(model, images, draws_count=256, seed=99):
    """L_S at the posterior mean, averaged over the same ``draws_count`` (t, ε) for every image."""
    g = generator(seed)
    timesteps = torch.randint(0, model.num_train_timesteps, (draws_count,), generator=g)
    noise = torch.randn(draws_count, 4, 8, 8, generator=g)
    values = []
    with torch.no_grad():
        for image in images:
            latents = encode(model, image.unsqueeze(0)).expand(draws_count, -1, -1, -1)
            predicted = predict(model, latents, timesteps, noise, "a photo")
            values.append(F.mse_loss(predicted, noise))
    return torch.stack(values)


def protect(name, model, images, **overrides):
    return PROTECTIONS.get(name).from_overrides({"steps": "10", "latent": "mean", **overrides})(
        images, model, generator=generator(0)
    )


def test_advdm_raises_and_advdm_minus_lowers_the_semantic_loss(sensitive_model, clean8):
    clean = expected_semantic_loss(sensitive_model, clean8)
    raised = expected_semantic_loss(sensitive_model, protect("advdm", sensitive_model, clean8)) - clean
    lowered = expected_semantic_loss(sensitive_model, protect("advdm-", sensitive_model, clean8)) - clean
    assert raised.mean() > 0 and lowered.mean() < 0, (raised, lowered)
    assert (raised > lowered).all()


def test_sds_minus_lowers_and_sds_plus_raises_the_semantic_loss(origin_denoiser_model, clean8):
    model = origin_denoiser_model
    clean = expected_semantic_loss(model, clean8)
    lowered = expected_semantic_loss(model, protect("sds-", model, clean8)) - clean
    raised = expected_semantic_loss(model, protect("sds+", model, clean8)) - clean
    assert (lowered < 0).all() and (raised > 0).all(), (lowered, raised)


def latent_distance(model, images, reference):
    with torch.no_grad():
        return (encode(model, images) - encode(model, reference)).flatten(1).norm(dim=1)


@pytest.mark.parametrize("name", ["texture", "photoguard"])
def test_textural_methods_pull_the_latent_toward_the_target(name, tiny_model, clean8):
    # Each method's default target: texture's tiled text; PhotoGuard's zero latent (black
    # is not that latent, but the pull toward it shows as a pull toward nothing: the norm).
    if name == "photoguard":
        before = encode(tiny_model, clean8).flatten(1).norm(dim=1)
        after = encode(tiny_model, protect(name, tiny_model, clean8)).flatten(1).norm(dim=1)
        noisy_images = PROTECTIONS.get("noise")()(clean8, None, generator=generator(0))
        noisy = encode(tiny_model, noisy_images).flatten(1).norm(dim=1)
        assert (after < before).all() and (after < noisy).all(), (before, after, noisy)
        return
    target = text_image(64, 64).unsqueeze(0).expand(2, -1, -1, -1)
    before = latent_distance(tiny_model, clean8, target)
    after = latent_distance(tiny_model, protect(name, tiny_model, clean8), target)
    noisy = latent_distance(tiny_model, PROTECTIONS.get("noise")()(clean8, None, generator=generator(0)), target)
    assert (after < before).all() and (after < noisy).all(), (before, after, noisy)


def test_encoder_attack_moves_the_latent_farther_than_noise(tiny_model, clean8):
    attacked = latent_distance(tiny_model, protect("encoder", tiny_model, clean8), clean8)
    noisy = latent_distance(tiny_model, PROTECTIONS.get("noise")()(clean8, None, generator=generator(0)), clean8)
    assert (attacked > noisy).all(), (attacked, noisy)


# -- reference mode: more cost, same update, model left as it was --------------------------
def unet_state(model):
    return [(p.requires_grad, p.grad) for p in model.unet.parameters()]


@pytest.mark.parametrize("name", ["advdm", "mist", "texture", "sdst-"])
def test_reference_mode_gives_the_fair_update(name, tiny_model, clean8):
    fair = PROTECTIONS.get(name).from_overrides({"steps": "2"})
    reference = PROTECTIONS.get(name).from_overrides({"steps": "2", "reference_mode": "true"})
    assert torch.equal(
        fair(clean8, tiny_model, generator=generator(4)), reference(clean8, tiny_model, generator=generator(4))
    )
    assert all(flag is False and grad is None for flag, grad in unet_state(tiny_model))


# Extra UNet forwards per step in reference mode: the target's (AdvDM, AdvDM(−), Mist,
# texture) and the image's (texture, whose reference loss module computes L_S it does not
# use); SDS runs its one forward under no_grad; PhotoGuard's and the encoder attack's own
# code have none of these accidents.
EXTRA_FORWARDS = {
    "advdm": 1,
    "advdm-": 1,
    "mist": 1,
    "texture": 2,
    "photoguard": 0,
    "encoder": 0,
    "sds+": 0,
    "sds-": 0,
    "sdst-": 0,
}
# Whose reference-mode backward reaches the UNet's weights (its loss goes through the UNet).
BUILDS_WEIGHT_GRADS = {"advdm", "advdm-", "mist"}


def test_the_cost_table_covers_every_method_with_a_reference_mode():
    with_mode = [
        n for n, cls in PROTECTIONS.items() if "reference_mode" in {f.name for f in dataclasses.fields(cls.Config)}
    ]
    # A method that declares no reference cost runs the fair step in reference mode
    # (tests/test_protections.py); every method that declares one is measured here.
    costly = [n for n in with_mode if PROTECTIONS.get(n).reference_costs]
    assert set(costly) <= set(EXTRA_FORWARDS), sorted(set(costly) - set(EXTRA_FORWARDS))
    assert set(EXTRA_FORWARDS) <= set(with_mode)


@pytest.mark.parametrize("name", sorted(EXTRA_FORWARDS))
def test_reference_mode_pays_the_reference_costs(name, tiny_model, clean8):
    def one_step(mode: str):
        protection = PROTECTIONS.get(name).from_overrides({"steps": "1", "reference_mode": mode})
        state = protection.prepare(clean8, tiny_model, generator=generator(0))
        watch = UNetWatch(tiny_model.unet)
        try:
            with torch.autograd.graph.saved_tensors_hooks(watch.pack, lambda t: t):
                protection.step(state)
        finally:
            watch.close()
        return watch

    # The declaration says what the measurement must find.
    declared = PROTECTIONS.get(name).reference_costs
    assert sum(cost in declared for cost in ("target_forward", "image_forward")) == EXTRA_FORWARDS[name]
    fair, reference = one_step("false"), one_step("true")
    assert reference.forwards == fair.forwards + EXTRA_FORWARDS[name]
    # The reference's UNet is checkpointed (use_checkpoint: True): on in every reference-mode
    # forward, off at fair cost, and the model's own setting restored after the step.
    if fair.forwards:
        assert fair.checkpointing == {False} and reference.checkpointing == {True}
    assert not tiny_model.unet.is_gradient_checkpointing
    if name in BUILDS_WEIGHT_GRADS:
        # Their loss runs the UNet with grad: checkpointing keeps the blocks' inputs only.
        assert reference.saved_inside < fair.saved_inside
    elif EXTRA_FORWARDS[name]:  # texture: forwards the fair step never runs
        assert reference.saved_total > fair.saved_total
    else:
        assert reference.saved_total == fair.saved_total
    assert fair.weight_grads == 0
    if name in BUILDS_WEIGHT_GRADS:
        assert "trainable_unet" in declared
        assert reference.weight_grads > 0, "reference mode must build UNet weight gradients"
    else:  # texture's loss does not reach the UNet: its extra forwards only cost memory
        assert reference.weight_grads == 0
    assert all(flag is False and grad is None for flag, grad in unet_state(tiny_model))


def alive_at_backward(model, images, monkeypatch, *, keep_losses: bool) -> tuple[int, list[int]]:
    """Texture, one reference-mode step: (tensors the UNet saved, how many of them are alive at backward).

    Each tensor saved inside a UNet forward is held, detached (no reference cycle through
    its own grad_fn), by an object in a weak set: it stays there exactly as long as the
    graph that saved it. ``keep_losses`` keeps the extra forwards' losses until the step
    ends (the earlier, unfaithful reference mode), to show the count can see a kept graph.
    """
    import gc
    import weakref

    from cloakbench.protections import losses as loss_module
    from cloakbench.protections.reference_costs import ReferenceCosts

    class Held:
        __slots__ = ("__weakref__", "tensor")

        def __init__(self, tensor):
            self.tensor = tensor

    alive, packed, depth, kept = weakref.WeakSet(), [0], [0], []
    handles = [
        model.unet.register_forward_pre_hook(lambda module, args: depth.__setitem__(0, depth[0] + 1)),
        model.unet.register_forward_hook(lambda module, args, out: depth.__setitem__(0, depth[0] - 1)),
    ]

    def pack(tensor):
        if not depth[0]:
            return tensor
        held = Held(tensor.detach())
        alive.add(held)
        packed[0] += 1
        return held

    def unpack(held):
        return held.tensor if isinstance(held, Held) else held

    at_backward = []
    original_gradient, original_semantic = ReferenceCosts.input_gradient, loss_module.semantic_loss

    def spy(self, *args):
        gc.collect()
        at_backward.append(len(alive))
        return original_gradient(self, *args)

    def keeping(*args, **kwargs):
        loss = original_semantic(*args, **kwargs)
        kept.append(loss)
        return loss

    monkeypatch.setattr(ReferenceCosts, "input_gradient", spy)
    if keep_losses:
        monkeypatch.setattr(loss_module, "semantic_loss", keeping)
    protection = PROTECTIONS.get("texture").from_overrides({"steps": "1", "reference_mode": "true"})
    state = protection.prepare(images, model, generator=generator(0))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            protection.step(state)
    finally:
        for handle in handles:
            handle.remove()
        monkeypatch.undo()
    return packed[0], at_backward


def test_reference_extra_forwards_free_their_graphs_before_the_backward(tiny_model, clean8, monkeypatch):
    """The reference's loss module drops L_S of the target (and texture's of the image) when its
    forward returns (diff_mist.py:154-155): nothing the extra UNet forwards saved is alive at backward."""
    packed, at_backward = alive_at_backward(tiny_model, clean8, monkeypatch, keep_losses=False)
    assert packed > 0, "texture's reference step runs two UNet forwards with grad"
    assert at_backward == [0], f"{at_backward} tensors of the extra forwards still alive at the backward pass"
    # The count sees a graph that is kept: the earlier reference mode kept both until the step ended.
    packed_kept, at_backward_kept = alive_at_backward(tiny_model, clean8, monkeypatch, keep_losses=True)
    assert packed_kept == packed and at_backward_kept[0] > 0


@pytest.mark.parametrize("name", ["sds-", "sdst-"])
def test_double_encode_option_adds_one_encoder_pass_and_keeps_the_update(name, tiny_model, clean8):
    """The paper-time SDS loop encoded the image twice per step (Diff-Protect d2413cb, attacks.py:213, 246)."""
    calls = []
    handle = tiny_model.vae.encoder.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        outputs = {}
        for double in ("false", "true"):
            calls.clear()
            protection = PROTECTIONS.get(name).from_overrides(
                {"steps": "2", "reference_mode": "true", "reference_double_encode": double}
            )
            outputs[double] = protection(clean8, tiny_model, generator=generator(4))
            outputs[double + "_calls"] = len(calls)
    finally:
        handle.remove()
    assert outputs["true_calls"] == outputs["false_calls"] + 2  # one more pass per step
    assert torch.equal(outputs["true"], outputs["false"])
