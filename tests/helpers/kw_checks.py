"""Checks shared by the backbone tests: a KW layer against its reference layout entry, and the
plain twin of a KW network at t = 1 (every attention one-hot on its assigned cell)."""
import torch
import torch.nn as nn

from kw_mm.cnn import KWConvNd, assemble_kernels_reference


def assert_layer_matches_layout(conv: KWConvNd, layer: dict) -> None:
    """Shape, stride, groups and attention sizes of ``conv`` equal the layout entry ``layer``."""
    att = conv.attention
    assert list(conv.weight_shape) == layer['weight_shape'], layer['name']
    assert list(conv.stride) == layer['stride'] and conv.groups == layer['groups'], layer['name']
    assert att.num_mixtures == layer['num_local_mixture'], layer['name']
    assert att.start_cell == layer['start_cell_idx'], layer['name']
    assert att.fc1.out_features == layer['attn_hidden'], layer['name']
    assert att.fc2.out_features == layer['fc2_out'], layer['name']


def copy_into_plain_twin(kw: nn.Module, plain: nn.Module, randomize_weights=False) -> None:
    """Give ``plain`` the kernels of ``kw`` at t = 1 (the one-hot assembly of its ``beta``) and
    the same random norm parameters, running statistics and biases on both sides.

    Args:
        kw (nn.Module): The KW network, module names equal to ``plain``'s.
        plain (nn.Module): Its plain twin.
        randomize_weights (bool): Also randomize the weights of layers that stay plain (else
            they are copied from ``kw`` as they are).
    """
    kw_modules = dict(kw.named_modules())
    with torch.no_grad():
        for name, param in plain.named_parameters():
            owner, leaf = name.rsplit('.', 1)
            module = kw_modules[owner]
            if isinstance(module, KWConvNd) and leaf == 'weight':
                alpha = module.attention.beta[None, :, :-1]
                kernel = assemble_kernels_reference(alpha, module.cells, module.geometry)[0]
                param.copy_(kernel.reshape(param.shape))
                continue
            source = getattr(module, leaf)
            if randomize_weights or leaf != 'weight' or source.dim() == 1:
                source.uniform_(0.5, 1.5)  # norms, biases, layer scales
            param.copy_(source.reshape(param.shape))
        for name, buf in plain.named_buffers():
            if name.endswith(('running_mean', 'running_var')):
                buf.uniform_(0.5, 1.5)
                kw.get_buffer(name).copy_(buf)
