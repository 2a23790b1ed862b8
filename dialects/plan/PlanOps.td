//===- PlanOps.td - the plan dialect: one op per runtime instruction ------===//
//
// The last layer before emission. A `plan.program` holds the buffers of one rank
// program (`plan.buffer`, and `plan.param`'s four buffers per parameter), then its
// two instruction streams, `plan.microbatch` and `plan.update`, made of
// `plan.kernel` ops: one per runtime instruction, named after its opcode, reading
// and writing buffers. The kernel signatures (buffer order, dtypes, element counts,
// attributes) are the runtime's own table (runtime/plan/ops.h), which the verifier
// consults, so the compiler and the runtime cannot disagree about an instruction.
// Memory planning gives every buffer an `offset` in the program's arena.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_PLAN_OPS
#define HEIRETSU_PLAN_OPS

include "mlir/IR/OpBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"

def Plan_Dialect : Dialect {
  let name = "plan";
  let cppNamespace = "::heiretsu::plan_ir";
  let summary = "rank programs as runtime instructions over arena buffers";
}

class Plan_Op<string mnemonic, list<Trait> traits = []>
    : Op<Plan_Dialect, mnemonic, traits>;

def Plan_BufferType : MemRefRankOf<[F32, I32], [0, 1, 2, 3, 4]>;

def Plan_InitZeros : I32EnumAttrCase<"zeros", 0>;
def Plan_InitOnes : I32EnumAttrCase<"ones", 1>;
def Plan_InitNormal : I32EnumAttrCase<"normal", 2>;
def Plan_InitKindAttr : I32EnumAttr<"InitKind", "parameter initializer",
    [Plan_InitZeros, Plan_InitOnes, Plan_InitNormal]> {
  let cppNamespace = "::heiretsu::plan_ir";
}

def Plan_ProgramOp : Plan_Op<"program", [IsolatedFromAbove, NoTerminator,
    SingleBlock]> {
  let summary = "one rank program: buffers, then the microbatch and update streams";
  let description = [{
    Constraints:
    - (C1) the body holds `plan.buffer` and `plan.param` ops, then exactly one
      `plan.microbatch` and one `plan.update`, in that order.
    - (C2) exactly one buffer each has io = "tokens", "targets" and "loss".
    - (C3) `micro_batch_size`, `microbatches`, `seq` and `vocab` are positive.
    - (C4) when `arena_bytes` is present (after memory planning) every buffer has
      an `offset` and fits in the arena.
  }];
  let arguments = (ins StrAttr:$model, I64Attr:$micro_batch_size,
                       I64Attr:$microbatches, I64Attr:$seq, I64Attr:$vocab,
                       OptionalAttr<I64Attr>:$arena_bytes,
                       OptionalAttr<I64Attr>:$param_bytes,
                       OptionalAttr<I64Attr>:$activation_bytes);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$model attr-dict-with-keyword $body";
  let hasVerifier = 1;
}

def Plan_BufferOp : Plan_Op<"buffer"> {
  let summary = "a buffer of the program's arena";
  let description = [{
    `io` marks the microbatch inputs ("tokens", "targets") and the loss ("loss").
    `offset` (bytes, a multiple of 64) is set by memory planning.

    `grad_reduce = "tp"` marks a value that enters a tensor-parallel region
    (lowered from `dist.copy`): the backward pass all-reduces its gradient over tp
    before using it.

    Constraints:
    - (C1) `io`, when present, is "tokens" or "targets" (i32) or "loss" (f32, one
      element).
    - (C2) `grad_reduce`, when present, is "tp".
  }];
  let arguments = (ins StrAttr:$name, OptionalAttr<StrAttr>:$io,
                       OptionalAttr<I64Attr>:$offset,
                       OptionalAttr<StrAttr>:$grad_reduce);
  let results = (outs Plan_BufferType:$buffer);
  let assemblyFormat = "$name attr-dict `:` type($buffer)";
  let hasVerifier = 1;
}

def Plan_ParamOp : Plan_Op<"param", [AllTypesMatch<["value", "grad"]>,
    AllTypesMatch<["exp_avg", "exp_avg_sq"]>]> {
  let summary = "a parameter: its value, gradient and AdamW moments";
  let description = [{
    The moments have the value's type, or (ZeRO-1) are the one-dimensional shard
    of the flattened parameter this rank updates.

    Constraints:
    - (C1) the buffers are f32; the moments have the value's type or are 1-D with
      at most as many elements.
    - (C2) `std` is present if and only if `init` is `normal`, and is > 0.
    - (C3) `offsets`, set by memory planning, has four entries.
    - (C4) `tp_dim`, when present, is a dimension of the value: the buffers hold
      this rank's block of it (tensor parallelism); `global_shape` is then the
      logical shape, that dimension a multiple of the value's.
    - (C5) `grad_reduce`, when present, is "tp": the parameter is whole on every
      tp rank but each computes a partial sum of its gradient (norms under
      sequence parallelism see only their rank's tokens); the update stream
      all-reduces it first.
  }];
  let arguments = (ins StrAttr:$name, Plan_InitKindAttr:$init,
                       OptionalAttr<F64Attr>:$std, UnitAttr:$decay,
                       OptionalAttr<DenseI64ArrayAttr>:$offsets,
                       OptionalAttr<I64Attr>:$tp_dim,
                       OptionalAttr<DenseI64ArrayAttr>:$global_shape,
                       OptionalAttr<StrAttr>:$grad_reduce);
  let results = (outs Plan_BufferType:$value, Plan_BufferType:$grad,
                      Plan_BufferType:$exp_avg, Plan_BufferType:$exp_avg_sq);
  let assemblyFormat = [{
    $name $init (`std` `=` $std^)? (`decay` $decay^)? attr-dict `:` type($value)
    `` custom<MomentType>(ref(type($value)), type($exp_avg))
  }];
  let hasVerifier = 1;
}

def Plan_MicrobatchOp : Plan_Op<"microbatch", [NoTerminator, SingleBlock,
    HasParent<"ProgramOp">]> {
  let summary = "the instructions run once per microbatch (forward and backward)";
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "attr-dict-with-keyword $body";
}

def Plan_UpdateOp : Plan_Op<"update", [NoTerminator, SingleBlock,
    HasParent<"ProgramOp">]> {
  let summary = "the instructions run once per optimizer step";
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "attr-dict-with-keyword $body";
}

def Plan_KernelOp : Plan_Op<"kernel"> {
  let summary = "one runtime instruction";
  let description = [{
    `name` is an opcode of the runtime's table (runtime/plan/ops.h): "linear",
    "attention_grad", ... `buffers` are its present buffers in signature order;
    `absent` lists the signature positions of optional buffers left out.

    Constraints:
    - (C1) `name` is a known opcode.
    - (C2) `ints` and `floats` have the opcode's number of attributes; flags are 0
      or 1 and sizes are non-negative.
    - (C3) the buffers match the signature in number, element type and element
      count.
  }];
  let arguments = (ins StrAttr:$name, Variadic<Plan_BufferType>:$buffers,
                       DenseI64ArrayAttr:$ints, DenseF64ArrayAttr:$floats,
                       DenseI64ArrayAttr:$absent);
  let assemblyFormat = [{
    $name `(` $buffers `)` `ints` `=` $ints `floats` `=` $floats `absent` `=` $absent
    attr-dict `:` type($buffers)
  }];
  let hasVerifier = 1;
}

#endif // HEIRETSU_PLAN_OPS
