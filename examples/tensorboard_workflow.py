"""Watch a fit in TensorBoard, checkpoint it, reload it and continue training.

Run it, then open TensorBoard on the logs it writes:

```bash
.venv/bin/python examples/tensorboard_workflow.py --out workflow_output
.venv/bin/tensorboard --logdir workflow_output/logs     # then browse http://localhost:6006
```

The SCALARS tab shows `parameters/m`, `parameters/b`, `parameters/sigma`,
`statistics/log_likelihood`, `statistics/gradient_norm` and `statistics/distance_to_closed_form`
per epoch; IMAGES shows the data with the fitted line every 25 epochs. None of it needs
`tf.summary` code: the callbacks write it.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mle  # noqa: E402
from keras_mle import callbacks  # noqa: E402


def optimizer():
    # AMSGrad: plain Adam wanders off the optimum periodically as its second-moment average decays.
    return keras.optimizers.Adam(0.1, amsgrad=True)


def main(out: str, epochs: int) -> None:
    keras.utils.set_random_seed(0)
    x, y = keras_mle.data.noisy_line(m=1.0, b=2.0, n=100, noise=0.15, seed=0)
    logs = os.path.join(out, "logs")
    model_file = os.path.join(out, "line.keras")
    backup = os.path.join(out, "backup")

    # 1. Fit with callbacks: parameters in History and TensorBoard, a stopping rule that knows
    #    what convergence means for a likelihood, and crash-safe checkpoints.
    model = keras_mle.GaussianRegression()
    model(x[:2])
    model.compile(optimizer=optimizer())
    parameters = callbacks.ParameterHistory()
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=len(x),
        verbose=0,
        callbacks=[
            parameters,
            callbacks.ParameterTensorBoard(logs, data=(x, y), image_every=25),
            callbacks.ConvergenceStopping((x, y), gradient_tolerance=1e-4, patience=5),
            callbacks.ModelCheckpoint(model_file),
            callbacks.BackupAndRestore(backup, delete_checkpoint=False),
        ],
    )
    print(f"fit(): {len(history.epoch)} epochs")
    sigma = parameters.history["sigma"]
    print(f"  sigma went {sigma[0]:.4f} -> {sigma[-1]:.4f}")
    print(f"Open TensorBoard with: tensorboard --logdir {logs}")

    # 2. Reload the checkpoint (a .keras archive: weights, optimizer state, compile config) in
    #    what could be a new process, and continue training where it stopped. The same log
    #    folder and `initial_epoch` keep TensorBoard's steps the real epoch numbers.
    reloaded = keras.models.load_model(model_file)
    done = len(history.epoch)
    reloaded.fit(
        x,
        y,
        initial_epoch=done,
        epochs=done + 50,
        batch_size=len(x),
        verbose=0,
        callbacks=[callbacks.ParameterTensorBoard(logs, data=(x, y), image_every=25)],
    )
    print(f"reloaded and trained 50 more epochs: {int(reloaded.optimizer.iterations)} steps in all")

    # 3. The custom loop resumes from the same backup files (and would after a kill -9).
    fresh = keras_mle.GaussianRegression()
    fresh(x[:2])
    keras_mle.loops.train(
        fresh,
        x,
        y,
        epochs=done + 50,
        batch_size=len(x),
        optimizer=optimizer(),
        verbose=0,
        checkpoint_dir=backup,
        resume=True,
    )
    print(f"custom loop resumed from {backup}: {int(fresh.optimizer.iterations)} steps in all")

    ols = keras_mle.closed_form.ols(x, y)
    print(f"{'':8}{'fit()+reload':>14}{'loop resume':>14}{'closed form':>14}")
    for name in ("m", "b", "sigma"):
        a, b, c = (float(np.ravel(p[name])[0]) for p in (reloaded.params, fresh.params, ols))
        print(f"{name:8}{a:14.6f}{b:14.6f}{c:14.6f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="workflow_output", help="output folder")
    parser.add_argument("--epochs", type=int, default=300, help="at most this many epochs at first")
    args = parser.parse_args()
    main(args.out, args.epochs)
