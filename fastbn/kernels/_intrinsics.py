"""LLVM intrinsics Numba does not expose."""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma.f64``), arguments cast to float64.

    An explicit fused multiply-add is the same number on every machine, unlike
    LLVM's contraction of ``a * b + c`` under fast-math, which happens only
    where the build target has FMA instructions. Here (AMD EPYC, Zen 3) a
    separate multiply and add both compete with the float32 -> float64
    conversions for the same two pipes; the FMA runs on the other two.
    """
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(fn, args)

    return sig, codegen
