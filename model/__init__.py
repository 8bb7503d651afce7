"""The network, in pure NumPy: no I/O, no Prefect.

config      ModelConfig (frozen, travels with the weights) and the presets
network     init, forward, backward, update, check_params
train       fit: seeded validation split, mini-batch SGD, learning curve
predict     predict_proba_pixels (score, evaluate); training's validation pass
metrics     accuracy, log-loss, confusion matrix, per-class scores
validation  input checks; InputError
"""
