"""The MixMo Keras model: one network for training, evaluation and prediction.

`MixMoModel` wraps a `MixMoNetwork` (built by `mixmo_tf.models.build_mixmo_network`). Its
`call` feeds the same image to every member (masks 1/M) and returns the ensemble and member
probabilities; its `train_step` samples the batch's mixing from a stateless RNG keyed by
(seed, step), so a resumed run continues the same random stream, and minimises the root-r
weighted cross-entropy plus the L2 term over all trainable variables (docs/method.md §3-7).
Paper: https://arxiv.org/abs/2103.06132.

The method is written once, in `keras.ops`: `mix_batch` draws the mixing, `compute_mixmo_loss`
computes the loss, `update_training_metrics` and `evaluate_batch` the logs. What differs per
backend is only how gradients are taken and state is carried: the thin steps of
`steps_tensorflow`, `steps_jax` and `steps_torch`, one of which this class inherits.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import keras
from keras import ops

from mixmo_tf.config.choices import MSDA_KINDS
from mixmo_tf.mixing import features, inputs, keyed_random
from mixmo_tf.mixing.keyed_random import Tensor
from mixmo_tf.models import metrics
from mixmo_tf.models.legacy import is_legacy_network_config, network_from_legacy_config
from mixmo_tf.models.network import MixMoNetwork

if keras.backend.backend() == "jax":
    from mixmo_tf.models.steps_jax import JaxSteps as _BackendSteps
elif keras.backend.backend() == "torch":
    from mixmo_tf.models.steps_torch import TorchSteps as _BackendSteps
elif keras.backend.backend() == "tensorflow":
    from mixmo_tf.models.steps_tensorflow import TensorFlowSteps as _BackendSteps
else:
    raise ImportError(
        "MixMoModel trains with KERAS_BACKEND=tensorflow, jax or torch. "
        f"Received: KERAS_BACKEND={keras.backend.backend()}"
    )

_BATCH_STREAM, _REPLICA_STREAM, _SAMPLE_STREAM, _INPUT_MIXING_STREAM = 0, 1, 2, 3


class MixMoLoss(NamedTuple):
    """`compute_mixmo_loss`'s result, float32 scalars but the logits.

    Attributes:
        scaled_loss: what the optimizer differentiates: `loss` divided among tf.distribute
            replicas and scaled under mixed_float16.
        loss: cross_entropy + l2 * l2_loss.
        cross_entropy: batch mean of sum_i w_i * CE(targets_i, logits_i).
        l2_loss: sum of squares of every trainable variable.
        logits: `(batch, members, classes)` the members' logits.
    """

    scaled_loss: Tensor
    loss: Tensor
    cross_entropy: Tensor
    l2_loss: Tensor
    logits: Tensor


def _stack_float32(logits: list[Tensor]) -> Tensor:
    """M logits `(batch, classes)` -> `(batch, M, classes)` float32.

    Losses and probabilities are computed in float32 whatever the network's compute precision.
    """
    return ops.cast(ops.stack(logits, axis=1), "float32")


def _replica_id():
    """This replica's index in a `tf.distribute` strategy; 0 outside one and off TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return 0
    import tensorflow as tf

    replica = tf.distribute.get_replica_context()
    return 0 if replica is None else replica.replica_id_in_sync_group


@keras.saving.register_keras_serializable(package="mixmo_tf")
class MixMoModel(_BackendSteps, keras.Model):
    """A MixMo ensemble of M subnetworks sharing one core.

    Training data: dicts with `images` `(batch, members, H, W, C)` and `labels`
    `(batch, members)`, plus `partner_images` / `partner_labels` of the same shapes when
    `msda` is not "none". Evaluation data: `images` `(batch, H, W, C)`, `labels` `(batch,)`.

    Args:
        network: the `MixMoNetwork` (from `build_mixmo_network`) whose parts are trained.
        mixing_alpha: Dirichlet concentration of the mixing ratios; <= 0 gives equal ratios
            (MIMO). Defaults to 2.0.
        loss_power: r of the root-r loss weights. Defaults to 3.0.
        cut_prob: probability of Cut- (vs Linear-) MixMo before the decay. Defaults to 0.5.
        cut_prob_decay_start: training progress where cut_prob starts its linear decay to 0.
            Defaults to 11/12.
        msda: input mixing, one of "none", "mixup", "cutmix". Defaults to "none".
        msda_prob: probability that a (slot, member) input is mixed. Defaults to 0.5.
        msda_alpha: Beta concentration of the input-mixing ratio. Defaults to 1.0.
        l2: coefficient of the sum of squares of all trainable variables. Defaults to 3e-4.
        seed: seed of the training RNG stream. Defaults to 0.
        steps_per_epoch: optimizer steps per epoch, for the cut schedule. Defaults to 1.
        epochs: total epochs, for the cut schedule. Defaults to 1.
    """

    def __init__(
        self,
        network: MixMoNetwork,
        mixing_alpha: float = 2.0,
        loss_power: float = 3.0,
        cut_prob: float = 0.5,
        cut_prob_decay_start: float = 11 / 12,
        msda: str = "none",
        msda_prob: float = 0.5,
        msda_alpha: float = 1.0,
        l2: float = 3e-4,
        seed: int = 0,
        steps_per_epoch: int = 1,
        epochs: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(network, MixMoNetwork):
            raise TypeError(
                "network must be a MixMoNetwork: build it with build_mixmo_network. "
                f"Received: {type(network).__name__}"
            )
        if msda not in MSDA_KINDS:
            raise ValueError(f"msda must be one of {MSDA_KINDS}. Received: msda={msda!r}")
        if msda != "none" and msda_alpha <= 0:
            raise ValueError(f"msda_alpha must be > 0. Received: msda_alpha={msda_alpha}")
        if loss_power <= 0:
            raise ValueError(f"loss_power must be > 0. Received: loss_power={loss_power}")
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                "steps_per_epoch and epochs must be >= 1. "
                f"Received: steps_per_epoch={steps_per_epoch}, epochs={epochs}"
            )
        self.network = network
        self.mixing_alpha = float(mixing_alpha)
        self.loss_power = float(loss_power)
        self.cut_prob = float(cut_prob)
        self.cut_prob_decay_start = float(cut_prob_decay_start)
        self.msda = msda
        self.msda_prob = float(msda_prob)
        self.msda_alpha = float(msda_alpha)
        self.l2 = float(l2)
        self.seed = int(seed)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)

        self.num_members = network.num_members
        self.mask_shape = network.mask_shape
        self.num_classes = network.num_classes

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.cross_entropy_tracker = keras.metrics.Mean(name="cross_entropy")
        self.l2_tracker = keras.metrics.Mean(name="l2_loss")
        # Training accuracy is against each slot's own label, which input mixing keeps as the
        # major part of what the member sees.
        self.train_member_accuracies = self._member_accuracies()
        self.ensemble_metrics = [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
            metrics.NegativeLogLikelihood(name="nll"),
            metrics.ExpectedCalibrationError(name="ece"),
            metrics.BrierScore(name="brier"),
        ]
        self.member_accuracies = self._member_accuracies()

    def _member_accuracies(self) -> list[keras.metrics.Metric]:
        return [
            keras.metrics.SparseCategoricalAccuracy(name=f"member_{i}_accuracy")
            for i in range(self.num_members)
        ]

    @property
    def training_metrics(self) -> list[keras.metrics.Metric]:
        """What `train_step` logs, in order (the multi-worker loop reads them too)."""
        trackers = [self.loss_tracker, self.cross_entropy_tracker, self.l2_tracker]
        return trackers + self.train_member_accuracies

    @property
    def evaluation_metrics(self) -> list[keras.metrics.Metric]:
        """What `test_step` logs, in order (the multi-worker loop reads them too)."""
        return self.ensemble_metrics + self.member_accuracies

    # ---- inference -------------------------------------------------------------------------

    def member_logits(self, member_images, masks, training: bool = False) -> Tensor:
        """Logits of each member, `(batch, members, classes)`.

        Args:
            member_images: list of M image batches `(batch, H, W, C)`.
            masks: `(batch, h, w, members)` mixing masks.
            training: BatchNorm mode.
        """
        return _stack_float32(self.network.mixed_logits(member_images, masks, training=training))

    def prediction_logits(self, images, training: bool = False) -> Tensor:
        """Each member's logits `(batch, members, classes)` float32, every member seeing `images`.

        This is the network with masks 1/M, computed as the plain sum of the stem features
        (docs/method.md §7). Evaluation, export and prediction start from these logits.

        Args:
            images: `(batch, H, W, C)` normalised images.
        """
        return _stack_float32(self.network.summed_logits(images, training=training))

    def call(self, images, training: bool = False) -> dict[str, Tensor]:
        """Ensemble prediction: the same image to every member, features summed.

        Args:
            images: `(batch, H, W, C)` normalised images.

        Returns:
            dict: `{"ensemble": (batch, classes), "members": (batch, members, classes)}`
            probabilities; the ensemble is softmax of the mean logits (docs/method.md §7).
        """
        logits = self.prediction_logits(images, training=training)
        return {
            "ensemble": ops.softmax(ops.mean(logits, axis=1)),
            "members": ops.softmax(logits),
        }

    # ---- training --------------------------------------------------------------------------

    def _step_seeds(self, step=None) -> tuple[Tensor, Tensor, Tensor]:
        """`keyed_random` keys of this step: per global batch, and per replica for per-sample
        draws (the replica of a `tf.distribute` strategy on TensorFlow, 0 elsewhere).

        Args:
            step: this step's optimizer iteration; defaults to `self.optimizer.iterations`.
        """
        step = self.optimizer.iterations if step is None else step
        step_key = keyed_random.key(self.seed, step)
        batch_seed = keyed_random.fold_in(step_key, _BATCH_STREAM)
        replica_key = keyed_random.fold_in(
            keyed_random.fold_in(step_key, _REPLICA_STREAM), _replica_id()
        )
        sample_seed = keyed_random.fold_in(replica_key, _SAMPLE_STREAM)
        input_mixing_seed = keyed_random.fold_in(replica_key, _INPUT_MIXING_STREAM)
        return batch_seed, sample_seed, input_mixing_seed

    def current_cut_probability(self, step=None) -> Tensor:
        """Cut probability in the current epoch: progress = epoch / epochs, epochs counted
        from 1 as in the authors' code, so the last epoch has progress 1 and p = 0
        (docs/method.md §3).

        Args:
            step: this step's optimizer iteration; defaults to `self.optimizer.iterations`.
        """
        step = self.optimizer.iterations if step is None else step
        completed = keras.ops.floor_divide(step, self.steps_per_epoch)
        progress = keras.ops.cast(completed + 1, "float32") / self.epochs
        return features.cut_probability(progress, self.cut_prob, self.cut_prob_decay_start)

    def mix_batch(self, data: dict, step=None) -> dict:
        """Samples this step's mixing and returns the members' inputs, masks and targets.

        The draws depend only on (seed, step, replica), so a resumed run continues the same
        random stream.

        Args:
            data: a training batch (see the class docstring).
            step: this step's optimizer iteration, an integer scalar tensor; defaults to
                `self.optimizer.iterations`. A stateless (JAX) step passes the iteration
                from the optimizer state it is given.

        Returns:
            dict with `images` (list of M `(batch, H, W, C)`), `masks` `(batch, h, w, M)`,
            `targets` `(batch, M, classes)` soft labels and `weights` `(batch, M)` root-r loss
            weights from the masks' actual areas.
        """
        images, labels = data["images"], data["labels"]
        batch_size = keras.ops.shape(images)[0]
        image_height, image_width = images.shape[2], images.shape[3]
        height, width = self.mask_shape
        batch_seed, sample_seed, input_mixing_seed = self._step_seeds(step)
        params = features.sample_mixing_params(
            batch_seed,
            sample_seed,
            batch_size,
            self.num_members,
            self.mixing_alpha,
            self.current_cut_probability(step),
            height,
            width,
        )
        masks = features.mixing_masks(params, height, width)
        if self.msda == "none":
            targets = keras.ops.one_hot(labels, self.num_classes)
        else:
            msda_params = inputs.sample_input_mixing_params(
                input_mixing_seed,
                batch_size,
                self.num_members,
                self.msda_prob,
                self.msda_alpha,
                image_height,
                image_width,
            )
            own = inputs.own_pixel_masks(msda_params, self.msda, image_height, image_width)
            own_share = inputs.corrected_own_share(own, masks)
            if self.num_members > 1:
                # Single-network MSDA baselines keep the plain roles (docs/method.md §6).
                own, own_share = inputs.own_majority(own, own_share)
            images = inputs.mix_images(images, data["partner_images"], own)
            targets = inputs.soft_labels(
                labels, data["partner_labels"], own_share, self.num_classes
            )
        ratios = keras.ops.mean(masks, axis=(1, 2))
        return {
            "images": keras.ops.unstack(images, num=self.num_members, axis=1),
            "masks": masks,
            "targets": targets,
            "weights": features.loss_weights(ratios, self.loss_power),
        }

    def l2_loss(self) -> Tensor:
        """Sum of squares of every trainable variable (convs, dense, BN gamma and beta)."""
        return ops.sum(ops.stack([ops.sum(ops.square(v)) for v in self.trainable_variables]))

    def weighted_cross_entropy(self, targets, logits, weights) -> Tensor:
        """Batch mean of sum_i w_i * CE(targets_i, logits_i)."""
        cross_entropy = keras.losses.categorical_crossentropy(targets, logits, from_logits=True)
        return ops.mean(ops.sum(ops.multiply(weights, cross_entropy), axis=-1))

    def compute_mixmo_loss(self, batch: dict) -> MixMoLoss:
        """The loss of a mixed batch under the current variables: the method, on every backend.

        Runs the network in training mode (so it updates the BatchNorm moving statistics) and
        computes everything a step needs; the backend's step differentiates `scaled_loss`
        with respect to the trainable variables.

        Args:
            batch: `mix_batch`'s dict (`images`, `masks`, `targets`, `weights`).
        """
        logits = self.member_logits(batch["images"], batch["masks"], training=True)
        cross_entropy = self.weighted_cross_entropy(batch["targets"], logits, batch["weights"])
        l2_loss = self.l2_loss()
        loss = cross_entropy + self.l2 * l2_loss
        # fit sums gradients over tf.distribute replicas: each contributes its share. Under
        # mixed_float16 the optimizer is a LossScaleOptimizer: it scales the loss here and
        # unscales (or skips non-finite) gradients when it applies them.
        scaled_loss = self.optimizer.scale_loss(loss / self.replicas_in_sync())
        return MixMoLoss(scaled_loss, loss, cross_entropy, l2_loss, logits)

    def update_training_metrics(self, loss: MixMoLoss, labels) -> dict[str, Tensor]:
        """Adds a step's loss terms and member accuracies to the training metrics.

        Args:
            loss: `compute_mixmo_loss`'s result.
            labels: `(batch, M)` each slot's own label.

        Returns:
            The training metrics' current values.
        """
        self.loss_tracker.update_state(loss.loss)
        self.cross_entropy_tracker.update_state(loss.cross_entropy)
        self.l2_tracker.update_state(loss.l2_loss)
        for member, accuracy in enumerate(self.train_member_accuracies):
            accuracy.update_state(labels[:, member], loss.logits[:, member])
        return {m.name: m.result() for m in self.training_metrics}

    # ---- evaluation ------------------------------------------------------------------------

    def evaluate_batch(self, data: dict) -> dict[str, Tensor]:
        """Adds an evaluation batch (`images` `(batch, H, W, C)`, `labels` `(batch,)`) to the
        evaluation metrics and returns their current values."""
        labels = data["labels"]
        outputs = self(data["images"], training=False)
        for metric in self.ensemble_metrics:
            metric.update_state(labels, outputs["ensemble"])
        for member, accuracy in enumerate(self.member_accuracies):
            accuracy.update_state(labels, outputs["members"][:, member])
        return {m.name: m.result() for m in self.evaluation_metrics}

    # ---- serialization ---------------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "mixing_alpha": self.mixing_alpha,
            "loss_power": self.loss_power,
            "cut_prob": self.cut_prob,
            "cut_prob_decay_start": self.cut_prob_decay_start,
            "msda": self.msda,
            "msda_prob": self.msda_prob,
            "msda_alpha": self.msda_alpha,
            "l2": self.l2,
            "seed": self.seed,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
        }

    @classmethod
    def from_config(cls, config):
        # Deep copy: deserializing a functional network pops entries from its nested config,
        # which would leave the caller's dict unusable for a second from_config.
        config = copy.deepcopy(config)
        if is_legacy_network_config(config["network"]):
            # Saved before MixMoNetwork existed: the same layers, rebuilt with their parts kept.
            config["network"] = network_from_legacy_config(config["network"])
        else:
            config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
