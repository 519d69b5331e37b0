"""Writes the small .tflite test models under tests/data/tflite/, once, with TensorFlow's converter
and seeded random weights. TensorFlow is not a dependency of deploy: run this in an environment
that has it (python3.11 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu), e.g.

    /tmp/tf/bin/python scripts/make_tflite_models.py

- cnn_float.tflite: conv 3x3 -> depthwise 3x3 -> max pool -> conv 1x1 -> global average pool ->
  dense -> softmax, float32;
- cnn_int8.tflite: the same network, full-integer post-training quantization with a
  representative dataset (int8 activations, per-channel int8 conv weights, float32 input/output);
- audio_lstm.tflite: 8 frames of 40 mel bins -> conv1d -> LSTM (unrolled over the frames) ->
  per-frame dense, float32;
- lstm_while.tflite: an LSTM left as a WHILE loop, which TVM's TFLite frontend cannot import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "tflite"


def cnn() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input((32, 32, 3), batch_size=1, name="image")
    y = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
    y = tf.keras.layers.MaxPooling2D(2)(y)
    y = tf.keras.layers.Conv2D(16, 1, activation="relu")(y)
    y = tf.keras.layers.GlobalAveragePooling2D()(y)
    y = tf.keras.layers.Dense(10)(y)
    y = tf.keras.layers.Softmax()(y)
    return tf.keras.Model(x, y)


def audio() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(1)
    x = tf.keras.Input((8, 40), batch_size=1, name="mel")
    y = tf.keras.layers.Conv1D(16, 3, padding="same", activation="relu")(x)
    # unrolled: Keras 3's LSTM converts to a WHILE loop otherwise, which TVM 0.27's TFLite
    # frontend fails on (a TypeError inside its WHILE converter)
    y = tf.keras.layers.LSTM(16, return_sequences=True, unroll=True)(y)
    y = tf.keras.layers.Dense(8)(y)
    return tf.keras.Model(x, y)


def lstm_while() -> tf.keras.Model:
    """Keras 3's LSTM as it converts by default: a WHILE loop whose body slices the input at the
    loop counter (a SLICE with its begin computed at run time), which TVM 0.27's TFLite frontend
    cannot import: deploy lists it before compiling."""
    tf.keras.utils.set_random_seed(2)
    x = tf.keras.Input((8, 40), batch_size=1, name="mel")
    y = tf.keras.layers.LSTM(16, return_sequences=True)(x)
    return tf.keras.Model(x, y)


def convert(model: tf.keras.Model, int8: bool = False) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        shape = [1] + list(model.input_shape[1:])

        def representative():
            for _ in range(32):
                yield [rng.standard_normal(shape).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    net = cnn()
    for name, data in (("cnn_float", convert(net)), ("cnn_int8", convert(net, int8=True)),
                       ("audio_lstm", convert(audio())), ("lstm_while", convert(lstm_while()))):
        path = OUT / f"{name}.tflite"
        path.write_bytes(data)
        print(f"{path}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
