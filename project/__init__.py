"""MNIST-family image classification with PyTorch Lightning."""
