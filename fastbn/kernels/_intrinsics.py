"""LLVM intrinsics Numba does not expose."""
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
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


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
#: bytes per cache line; :func:`stream` writes whole lines non-temporally
LINE = 64


@intrinsic
def stream(typingctx, dst, src):
    """``dst[:] = src[:]`` for two 1-D unit-stride arrays of one dtype, the whole
    cache lines of ``dst`` with non-temporal 32-byte stores (``vmovntps`` /
    ``vmovntpd``), the partial lines at either end with ordinary stores.

    A non-temporal store writes a line without first reading it into the cache
    (an ordinary store's read for ownership), so a pass that reads two arrays
    and writes a third moves 12 bytes per float32 element instead of 16. The
    stores are weakly ordered: the writer calls :func:`store_fence` before other
    threads read ``dst``.
    """
    sig = types.void(dst, src)

    def codegen(context, builder, signature, args):
        dty, sty = signature.args
        da = context.make_array(dty)(context, builder, args[0])
        sa = context.make_array(sty)(context, builder, args[1])
        n = builder.extract_value(da.shape, 0)
        i64 = ir.IntType(64)
        et = context.get_data_type(dty.dtype)
        size = context.get_abi_sizeof(et)
        lanes = 32 // size
        vec = ir.VectorType(et, lanes)
        dptr, sptr = da.data, sa.data
        const = lambda v: ir.Constant(i64, v)                   # noqa: E731
        # elements before dst's first line boundary (none when dst starts on one)
        head = builder.udiv(builder.and_(builder.neg(builder.ptrtoint(dptr, i64)),
                                         const(LINE - 1)), const(size))
        head = builder.select(builder.icmp_signed("<", n, head), n, head)
        nvec = builder.mul(builder.sdiv(builder.sub(n, head), const(2 * lanes)), const(2))
        nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        with cgutils.for_range(builder, head) as loop:
            i = loop.index
            builder.store(builder.load(builder.gep(sptr, [i])), builder.gep(dptr, [i]))
        with cgutils.for_range(builder, nvec) as loop:
            i = builder.add(head, builder.mul(loop.index, const(lanes)))
            v = builder.load(builder.bitcast(builder.gep(sptr, [i]), vec.as_pointer()), align=size)
            st = builder.store(v, builder.bitcast(builder.gep(dptr, [i]), vec.as_pointer()),
                               align=32)
            st.set_metadata("nontemporal", nontemporal)
        start = builder.add(head, builder.mul(nvec, const(lanes)))
        with cgutils.for_range(builder, builder.sub(n, start)) as loop:
            i = builder.add(start, loop.index)
            builder.store(builder.load(builder.gep(sptr, [i])), builder.gep(dptr, [i]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_fence(typingctx):
    """``sfence`` on x86 (elsewhere LLVM's ``fence seq_cst``): the non-temporal
    stores before it are visible to other threads before any store after it.
    (LLVM lowers ``fence seq_cst`` to a locked instruction on x86, which the
    architecture manuals do not promise to order non-temporal stores.)"""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse.sfence", (),
                                                  ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen
