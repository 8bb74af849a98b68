"""Helpers shared by the test modules (not fixtures)."""

import keras_mle


def train(model, x, y, mode, epochs, callbacks, optimizer):
    """Full-batch training through `fit()` (`mode="fit"`) or `keras_mle.loops.train(mode=...)`."""
    if mode == "fit":
        model.compile(optimizer=optimizer)
        return model.fit(
            x, y, epochs=epochs, batch_size=len(x), shuffle=False, verbose=0, callbacks=callbacks
        )
    return keras_mle.loops.train(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=len(x),
        optimizer=optimizer,
        mode=mode,
        callbacks=callbacks,
        verbose=0,
    )
