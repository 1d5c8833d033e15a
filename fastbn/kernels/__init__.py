"""Numba kernels on the canonical layouts of :mod:`fastbn._axes`.

Private by design: no kernel validates its input or knows about ``axis``;
:mod:`fastbn.functional` is the public front door.
"""
from .._config import drop_stale_cache
from ._chunks import (COLS_PER_BLOCK, PLANE_CHUNK, ROWS_PER_CHUNK, SHARE_MIN_ROWS,
                      rows_per_chunk)
from .activations import _elu_backward, _elu_forward, _gelu_backward, _gelu_forward
from .backward import (_grad_coeffs, _grad_sums_planes, _grad_sums_rows, _grad_x_planes,
                       _grad_x_rows, _masked_grad_rows, _sum_columns)
from .conv import (_avg_pool_backward, _avg_pool_forward, _bias_act, _col2im, _conv_direct,
                   _conv_direct_grads, _im2col,
                   _max_pool_backward, _max_pool_forward, _relu_grad)
from .fused import (_backward_planes_fused, _backward_rows_fused, _forward_planes_fused,
                    _forward_rows_fused)
from .transpose import _copy_tiles
from .moments import _merge_columns, _moments_planes, _moments_rows, _moments_rows_at
from .normalize import (_affine_planes, _affine_rows, _blend_pair, _finite_shift,
                        _inference_vectors, _invstd_scale, _update_moving, _update_moving_pair)

__all__ = ["ROWS_PER_CHUNK", "COLS_PER_BLOCK", "PLANE_CHUNK", "SHARE_MIN_ROWS", "rows_per_chunk",
           "_moments_rows", "_moments_rows_at", "_moments_planes", "_affine_rows", "_affine_planes",
           "_grad_sums_rows", "_grad_sums_planes", "_grad_x_rows", "_grad_x_planes", "_masked_grad_rows",
           "_merge_columns", "_sum_columns", "_forward_planes_fused", "_backward_planes_fused",
           "_forward_rows_fused", "_backward_rows_fused",
           "_elu_forward", "_elu_backward", "_gelu_forward", "_gelu_backward",
           "_im2col", "_col2im", "_max_pool_forward",
           "_max_pool_backward", "_avg_pool_forward", "_avg_pool_backward", "_bias_act",
           "_relu_grad", "_conv_direct", "_conv_direct_grads",
           "_copy_tiles", "_finite_shift", "_grad_coeffs",
           "_inference_vectors", "_invstd_scale", "_update_moving", "_update_moving_pair",
           "_blend_pair"]

drop_stale_cache(_moments_rows)
