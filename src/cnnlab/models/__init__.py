"""Models: ImageNet-pretrained torchvision classifiers and the CIFAR-10 networks."""
