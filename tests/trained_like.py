"""Models with non-trivial BN statistics and affine parameters, so that a wrong BN folding or a
wrong test-time path would show in a comparison of features."""
import torch


def trained_like(model):
    """``model`` in eval mode with seeded random BN running statistics and affine weights."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()
