"""Client-level differential privacy: the clipping bound, the noise scale, the accountant, resumability.

What must hold: every update that leaves a device is within the recipe's L2 bound; the noise has the
standard deviation the multiplier promises; epsilon is Opacus's, checked against the closed form of the
Gaussian mechanism's RDP; a device stopped mid-round and restarted pins exactly the update bytes an
uninterrupted run pins; and the default recipe's digest is what it was before privacy existed.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from opacus.accountants.analysis import rdp as opacus_rdp

from agent import cli, content_id
from agent.adapters.account_identity import AccountIdentity, account_from_seed
from agent.benchmark import runner
from agent.benchmark.presets import BenchmarkConfig
from agent.commands.deploy import default_recipe
from agent.commands.local_federation import LocalFederation
from agent.engine.privacy_noise import noise_seed
from agent.errors import ConfigurationError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION
from agent.learning.merging import merge_updates
from agent.learning.modes import TrainingMode
from agent.learning.privacy.accountant import PrivacySpent, privacy_spent
from agent.learning.privacy.arguments import add_privacy_arguments, privacy_from_arguments
from agent.learning.privacy.config import NO_PRIVACY, PrivacyConfig
from agent.learning.privacy.mechanism import delta_norm, privatize
from agent.learning.simulation import Schedule, initial_state, simulate
from agent.learning.training import TrainingConfig, train_client
from agent.learning.update import ModelUpdate
from models.seeding import derive_seed
from models.spec import EncoderSpec
from tests.test_training_resume import ENGINE_CONFIG, images, stop_mid_training_and_restart

SPEC = EncoderSpec(architecture="resnet", stages=2, widths=(4, 8), image_size=16, projection_dim=8)


def update_of(deltas: dict[str, torch.Tensor]) -> ModelUpdate:
    return ModelUpdate(mode=TrainingMode.LAYER_WISE, stage=1, samples=10, deltas=deltas)


def random_update(scale: float, seed: int) -> ModelUpdate:
    generator = torch.Generator().manual_seed(seed)
    return update_of(
        {
            "stages.0.weight": torch.randn(16, 8, generator=generator) * scale,
            "heads.0.bias": torch.randn(7, generator=generator) * scale,
        }
    )


# --------------------------------------------------------------------------------------------- clipping


@pytest.mark.parametrize("scale", [0.0, 1e-6, 0.01, 0.1, 1.0, 10.0, 1e3, 1e6])
def test_clipping_bounds_every_update_and_leaves_small_ones_unchanged(scale: float) -> None:
    privacy = PrivacyConfig(clip_norm=1.5)
    for seed in range(20):
        update = random_update(scale, seed)
        private = privatize(update, privacy, noise_seed=seed)
        decoded = ModelUpdate.from_bytes(private.update.to_bytes())  # the bytes that leave the device
        assert delta_norm(decoded.deltas) <= 1.5
        if delta_norm(update.deltas) <= 1.5 * (1 - 1e-6):
            assert not private.clipped
            assert private.update.to_bytes() == update.to_bytes()
        else:
            assert private.clipped
            assert delta_norm(decoded.deltas) == pytest.approx(1.5, rel=1e-5)  # scaled, not cut


def test_clipping_scales_all_exchanged_tensors_together() -> None:
    update = update_of({"a": torch.full((4,), 3.0), "b": torch.full((9,), 4.0)})  # norm sqrt(36 + 144)
    private = privatize(update, PrivacyConfig(clip_norm=1.0), noise_seed=0).update
    factor = float(private.deltas["a"][0]) / 3.0
    assert float(private.deltas["b"][0]) / 4.0 == pytest.approx(factor, rel=1e-6)  # one direction
    assert delta_norm(private.deltas) == pytest.approx(1.0, rel=1e-5)


def test_every_update_of_a_simulated_private_federation_is_within_the_bound() -> None:
    clip = 0.05  # below the trained deltas' norms, so clipping acts in every round
    config = TrainingConfig(
        spec=SPEC,
        mode=TrainingMode.END_TO_END,
        federation_seed=1,
        batch_size=8,
        privacy=PrivacyConfig(clip_norm=clip),
    )
    shards = [images(count=16, seed=seed) for seed in range(2)]
    records = list(simulate(config, Schedule(2, 1), shards))
    updates = [result.update for record in records for result in record.results]
    assert len(updates) == 4
    for update in updates:
        assert delta_norm(update.deltas) <= clip
    trained = train_client(initial_state(config), 1, shards[0], config, derive_seed(1, "train", 0, 0))
    assert delta_norm(trained.update.deltas) > clip  # the bound did something


# ------------------------------------------------------------------------------------------------ noise


def test_the_noise_has_the_promised_standard_deviation() -> None:
    # sigma = z * C = 0.5 * 3 = 1.5 on each of d = 200,000 coordinates of a zero delta (never clipped).
    # The sample standard deviation of d Gaussians has relative standard error 1 / sqrt(2 d) = 0.0016, so
    # a 1% tolerance is six standard errors: a wrong scale (z instead of z * C, or sigma^2) cannot pass.
    # The mean's standard error is sigma / sqrt(d) = 0.0034; the tolerance 0.02 is six of them.
    privacy = PrivacyConfig(clip_norm=3.0, noise_multiplier=0.5)
    zero = update_of({"a": torch.zeros(100_000), "b": torch.zeros(400, 250)})
    noised = privatize(zero, privacy, noise_seed=1234).update
    values = torch.cat([noised.deltas["a"], noised.deltas["b"].reshape(-1)]).to(torch.float64)
    assert float(values.std()) == pytest.approx(privacy.noise_standard_deviation, rel=0.01)
    assert abs(float(values.mean())) < 0.02


def test_noise_is_added_to_the_clipped_delta() -> None:
    privacy = PrivacyConfig(clip_norm=1.0, noise_multiplier=2.0)
    update = random_update(100.0, seed=3)
    clipped = privatize(update, PrivacyConfig(clip_norm=1.0), noise_seed=7).update
    noised = privatize(update, privacy, noise_seed=7).update
    noise = torch.cat(
        [(noised.deltas[name] - clipped.deltas[name]).reshape(-1) for name in sorted(noised.deltas)]
    )
    assert float(noise.to(torch.float64).std()) == pytest.approx(2.0, rel=0.15)  # 135 values: 6% s.e.


def test_the_noise_depends_only_on_the_seed_and_leaves_the_global_generator_alone() -> None:
    privacy = PrivacyConfig(clip_norm=1.0, noise_multiplier=1.0)
    update = random_update(0.1, seed=0)
    torch.manual_seed(42)
    state = torch.get_rng_state()
    first = privatize(update, privacy, noise_seed=99).update.to_bytes()
    assert torch.equal(torch.get_rng_state(), state)
    assert privatize(update, privacy, noise_seed=99).update.to_bytes() == first
    assert privatize(update, privacy, noise_seed=100).update.to_bytes() != first


def test_without_privacy_the_update_leaves_as_trained() -> None:
    update = random_update(1e3, seed=1)
    assert privatize(update, NO_PRIVACY, noise_seed=1).update is update


def test_the_noise_seed_is_the_devices_own_and_stable() -> None:
    first = AccountIdentity(account_from_seed(1, "peer-0"))
    second = AccountIdentity(account_from_seed(1, "peer-1"))
    seed = noise_seed(first, "federation", 3, 2, "bafybase")
    assert noise_seed(AccountIdentity(account_from_seed(1, "peer-0")), "federation", 3, 2, "bafybase") == seed
    assert noise_seed(second, "federation", 3, 2, "bafybase") != seed
    assert noise_seed(first, "federation", 4, 2, "bafybase") != seed
    assert noise_seed(first, "federation", 3, 2, "bafyother") != seed
    assert 0 <= seed < 2**63


# ------------------------------------------------------------------------------------------- accountant


def closed_form_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon of ``rounds`` full-batch Gaussian mechanisms, from their RDP written out by hand.

    RDP of order a is rounds * a / (2 z^2) (Mironov, 2017); converted to (epsilon, delta) with the bound
    Opacus uses (Balle et al., 2020): rdp - (log delta + log a) / (a - 1) + log((a - 1) / a), minimised
    over the same orders Opacus's accountant searches.
    """
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    return min(
        rounds * order / (2 * noise_multiplier**2)
        - (math.log(delta) + math.log(order)) / (order - 1)
        + math.log((order - 1) / order)
        for order in orders
    )


@pytest.mark.parametrize(("multiplier", "rounds"), [(1.0, 6), (3.0, 12), (0.7, 40)])
def test_epsilon_of_full_participation_matches_the_closed_form(multiplier: float, rounds: int) -> None:
    spent = privacy_spent(PrivacyConfig(clip_norm=2.0, noise_multiplier=multiplier), rounds)
    assert spent.epsilon == pytest.approx(closed_form_epsilon(multiplier, rounds, 1e-5), rel=1e-9)
    # replace-one: the sensitivity is 2C, which is the mechanism with half the multiplier
    assert spent.epsilon_replace == pytest.approx(closed_form_epsilon(multiplier / 2, rounds, 1e-5), rel=1e-9)
    assert spent.epsilon_replace > spent.epsilon


def test_epsilon_of_a_sampled_schedule_matches_opacus_analysis() -> None:
    # The DP-SGD example of Abadi et al. (2016): q = 0.01, z = 4, 10,000 steps, delta 1e-5, for which
    # their moments accountant gives 1.26; RDP's conversion is somewhat tighter.
    privacy = PrivacyConfig(clip_norm=1.0, noise_multiplier=4.0, target_delta=1e-5)
    spent = privacy_spent(privacy, rounds=10_000, sampling_rate=0.01)
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = opacus_rdp.compute_rdp(q=0.01, noise_multiplier=4.0, steps=10_000, orders=orders)
    reference, _ = opacus_rdp.get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
    assert spent.epsilon == pytest.approx(reference, rel=1e-12)
    assert 0.8 < spent.epsilon < 1.26


def test_epsilon_edges() -> None:
    assert math.isinf(privacy_spent(NO_PRIVACY, 10).epsilon)
    assert math.isinf(privacy_spent(PrivacyConfig(clip_norm=1.0), 10).epsilon)  # clipping alone
    assert privacy_spent(PrivacyConfig(clip_norm=1.0, noise_multiplier=1.0), 0).epsilon == 0.0
    more = [privacy_spent(PrivacyConfig(1.0, 1.0), rounds).epsilon for rounds in (1, 5, 25)]
    assert more == sorted(more) and more[0] < more[-1]
    assert privacy_spent(NO_PRIVACY, 3).to_dict()["epsilon"] is None  # JSON has no infinity
    with pytest.raises(ConfigurationError):
        privacy_spent(NO_PRIVACY, -1)
    with pytest.raises(ConfigurationError):
        privacy_spent(NO_PRIVACY, 1, sampling_rate=0.0)


def test_the_description_names_the_guarantee() -> None:
    spent: PrivacySpent = privacy_spent(PrivacyConfig(clip_norm=5.0, noise_multiplier=1.0), 6)
    assert spent.describe().startswith("epsilon 13.") and "after 6 rounds" in spent.describe()


# ------------------------------------------------------------------------------------------------ recipe


def test_the_default_recipe_keeps_its_digest_and_a_private_one_round_trips() -> None:
    plain = TrainingConfig(spec=SPEC, mode=TrainingMode.LAYER_WISE, federation_seed=3)
    assert "privacy" not in plain.to_dict()
    assert TrainingConfig.from_dict(plain.to_dict()).privacy == NO_PRIVACY
    private = TrainingConfig(
        spec=SPEC, mode=TrainingMode.LAYER_WISE, federation_seed=3, privacy=PrivacyConfig(5.0, 1.0, 1e-6)
    )
    decoded = TrainingConfig.from_dict(json.loads(json.dumps(private.to_dict())))
    assert decoded == private and decoded.digest() == private.digest()
    assert private.digest() != plain.digest()
    assert plain.aggregation == DEFAULT_AGGREGATION


@pytest.mark.parametrize(
    "values",
    [
        {"clip_norm": 0.0},
        {"clip_norm": -1.0},
        {"clip_norm": "5"},
        {"clip_norm": True},
        {"clip_norm": float("inf")},
        {"clip_norm": 1.0, "noise_multiplier": -0.1},
        {"clip_norm": 1.0, "noise_multiplier": float("nan")},
        {"noise_multiplier": 1.0},  # noise without a bound to scale it to
        {"clip_norm": 1.0, "target_delta": 0.0},
        {"clip_norm": 1.0, "target_delta": 1.0},
        {"clip_norm": 1.0, "epsilon": 3.0},
    ],
)
def test_every_bad_privacy_setting_is_a_configuration_error(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        PrivacyConfig.from_dict(values)


def test_the_command_line_options() -> None:
    parser = argparse.ArgumentParser()
    add_privacy_arguments(parser)
    assert privacy_from_arguments(parser.parse_args([])) == NO_PRIVACY
    parsed = privacy_from_arguments(parser.parse_args(["--dp-clip", "5", "--dp-noise", "0.3"]))
    assert parsed == PrivacyConfig(clip_norm=5.0, noise_multiplier=0.3)
    with pytest.raises(ConfigurationError):
        privacy_from_arguments(parser.parse_args(["--dp-noise", "1"]))


# ------------------------------------------------------------------------------------------ robustness


def test_noised_honest_updates_are_not_filtered_by_the_default_rule() -> None:
    # Noise of sigma = z C on d coordinates has norm close to sigma sqrt(d) for every honest device (its
    # relative spread is 1 / sqrt(2 d)), so no honest update is near kappa = 3 times the round's median.
    config = TrainingConfig(
        spec=SPEC,
        mode=TrainingMode.LAYER_WISE,
        federation_seed=2,
        batch_size=8,
        privacy=PrivacyConfig(clip_norm=0.5, noise_multiplier=1.0),
    )
    assert config.aggregation == DEFAULT_AGGREGATION
    shards = [images(count=16, seed=seed) for seed in range(5)]
    records = list(simulate(config, Schedule(2, 1), shards))
    assert all(record.decisions == () for record in records)


# ------------------------------------------------------------------------------------------------ resume


def test_a_private_engine_stopped_mid_training_pins_the_uninterrupted_update(tmp_path: Path) -> None:
    privacy = PrivacyConfig(clip_norm=0.05, noise_multiplier=1.0)
    config = replace(ENGINE_CONFIG, privacy=privacy)
    data = images(count=48, seed=4, size=28)
    with LocalFederation(config, peers=1, rounds_per_stage=1, work_directory=tmp_path) as federation:
        stop_mid_training_and_restart(federation, data)
        account = federation.accounts[0]
        genesis = federation.observer.settings().genesis_model_cid
        seed = derive_seed(config.federation_seed, "train", 1, account.address.lower())
        trained = train_client(initial_state(config), 1, data, config, seed)
        secret = noise_seed(AccountIdentity(account), federation.federation_id, 1, 1, genesis)
        reference = privatize(trained.update, privacy, secret)
        assert reference.clipped
        (submission,) = federation.observer.submissions(1)
        assert submission.update_cid == content_id.compute(reference.update.to_bytes())
        assert submission.update_cid != content_id.compute(trained.update.to_bytes())


def test_contract_deploy_puts_privacy_in_the_recipe_and_refuses_it_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = default_recipe("lw", 0, privacy=PrivacyConfig(clip_norm=5.0, noise_multiplier=1.0))
    assert recipe.privacy == PrivacyConfig(clip_norm=5.0, noise_multiplier=1.0)
    assert default_recipe("lw", 0).privacy == NO_PRIVACY
    command = ["contract", "deploy", "--chain-url", "http://127.0.0.1:9", "--key-file", str(tmp_path / "k")]
    command += ["--quorum", "1", "--recipe", str(tmp_path / "recipe.json"), "--dp-clip", "5"]
    assert cli.main(command) == 78
    assert "differential privacy in the recipe or as options, not both" in capsys.readouterr().err


def test_a_noised_running_variance_is_merged_to_no_less_than_zero() -> None:
    base = {"stages.0.norm.running_var": torch.tensor([0.01, 1.0]), "stages.0.norm.weight": torch.ones(2)}
    noised = {
        "stages.0.norm.running_var": torch.tensor([-0.5, 0.25]),
        "stages.0.norm.weight": -torch.ones(2) * 3,
    }
    merged = merge_updates(base, [update_of(noised)])
    assert merged["stages.0.norm.running_var"].tolist() == [0.0, 1.25]
    assert merged["stages.0.norm.weight"].tolist() == [-2.0, -2.0]  # weights may go anywhere


def test_the_benchmark_records_privacy_and_its_epsilon() -> None:
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    preset = ["--model", "resnet", "--preset", "robustness"]
    config = runner.config_from_arguments(parser.parse_args([*preset, "--dp-clip", "5", "--dp-noise", "1"]))
    assert config.privacy == PrivacyConfig(clip_norm=5.0, noise_multiplier=1.0)
    assert BenchmarkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    summary = runner.privacy_summary(config)
    assert summary["rounds"] == 6 and summary["sampling_rate"] == 1.0
    assert summary["epsilon"] == pytest.approx(closed_form_epsilon(1.0, 6, 1e-5), rel=1e-9)
    plain = runner.config_from_arguments(parser.parse_args(preset))
    assert plain.privacy == NO_PRIVACY and runner.privacy_summary(plain)["epsilon"] is None
