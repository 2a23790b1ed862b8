//===- PlanOps.td - the plan dialect: one op per runtime instruction ------===//
//
// The last layer before emission. A `plan.program` holds the buffers of one rank
// program (`plan.buffer`, and `plan.param`'s four buffers per parameter), then its
// units (`plan.unit`: a microbatch's forward, its backward, communication, the
// update), made of `plan.kernel` ops, then the `plan.schedule` that orders the
// units' runs in one step. A `plan.kernel` is one runtime instruction, named after
// its opcode, reading and writing buffers. The kernel signatures (buffer order,
// dtypes, element counts, attributes) are the runtime's own table
// (runtime/plan/op_table.h, through ops.h), which the verifier consults, so the
// compiler and the runtime cannot disagree about an instruction.
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

// f32 and i32, and mixed precision's 16-bit storage (bf16, f16).
def Plan_BufferType : MemRefRankOf<[F32, I32, BF16, F16], [0, 1, 2, 3, 4]>;

def Plan_InitZeros : I32EnumAttrCase<"zeros", 0>;
def Plan_InitOnes : I32EnumAttrCase<"ones", 1>;
def Plan_InitNormal : I32EnumAttrCase<"normal", 2>;
def Plan_InitKindAttr : I32EnumAttr<"InitKind", "parameter initializer",
    [Plan_InitZeros, Plan_InitOnes, Plan_InitNormal]> {
  let cppNamespace = "::heiretsu::plan_ir";
}

def Plan_UnitForward : I32EnumAttrCase<"forward", 0>;
def Plan_UnitBackward : I32EnumAttrCase<"backward", 1>;
def Plan_UnitBackwardInput : I32EnumAttrCase<"backward_input", 2>;
def Plan_UnitBackwardWeight : I32EnumAttrCase<"backward_weight", 3>;
def Plan_UnitComm : I32EnumAttrCase<"comm", 4>;
def Plan_UnitUpdate : I32EnumAttrCase<"update", 5>;
// The values are plan.fbs's UnitKind.
def Plan_UnitKindAttr : I32EnumAttr<"UnitKind", "what a unit of a step is",
    [Plan_UnitForward, Plan_UnitBackward, Plan_UnitBackwardInput,
     Plan_UnitBackwardWeight, Plan_UnitComm, Plan_UnitUpdate]> {
  let cppNamespace = "::heiretsu::plan_ir";
}

def Plan_ProgramOp : Plan_Op<"program", [IsolatedFromAbove, NoTerminator,
    SingleBlock]> {
  let summary = "one rank program: buffers, units and the schedule of a step";
  let description = [{
    The program the ranks of pipeline stage `stage` run. Its body holds the
    buffers and parameters, then the units (`plan.unit`: instruction lists run as
    one piece), then the `plan.schedule` that orders them in one optimizer step
    (written by heiretsu-schedule; a program may lack it before that pass).

    A program declares its inputs and output through the `io` of its buffers:
    "tokens" where it holds the embedding, "targets" and "loss" where it holds
    the loss (a later pipeline stage has no tokens; an earlier one neither
    targets nor loss).

    Constraints:
    - (C1) the body holds `plan.buffer` and `plan.param` ops, then one or more
      `plan.unit`s, then at most one `plan.schedule`, in that order.
    - (C2) at most one buffer each has io = "tokens", "targets", "loss",
      "position" and "logits".
    - (C3) a program with a "targets" buffer has a "loss" one (a stage may have a
      loss without targets: the auxiliary losses of its MoE layers).
    - (C4) `micro_batch_size`, `microbatches`, `seq` and `vocab` are positive.
    - (C5) when `arena_bytes` is present (after memory planning) every buffer has
      an `offset` and fits in the arena.
    - (C6) `stage` is >= 0, and below the `pp` of the module's `dist.mesh @world`
      when the program sits in a module that has one.
    - (C7) unit names are unique within the program.
    - (C8) `slots` (set by memory planning: the microbatches whose activations
      the schedule keeps at once) is >= 1, and `slot_bytes` is present with it.
  }];
  let arguments = (ins StrAttr:$model, I64Attr:$stage, I64Attr:$micro_batch_size,
                       I64Attr:$microbatches, I64Attr:$seq, I64Attr:$vocab,
                       OptionalAttr<I64Attr>:$arena_bytes,
                       OptionalAttr<I64Attr>:$param_bytes,
                       OptionalAttr<I64Attr>:$activation_bytes,
                       OptionalAttr<I64Attr>:$slots,
                       OptionalAttr<I64Attr>:$slot_bytes,
                       OptionalAttr<I64Attr>:$activation_bytes_f32);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$model attr-dict-with-keyword $body";
  let hasVerifier = 1;
}

def Plan_BufferOp : Plan_Op<"buffer"> {
  let summary = "a buffer of the program's arena";
  let description = [{
    `io` marks the microbatch inputs ("tokens", "targets") and the loss ("loss");
    in a decode program, the first token's position ("position"), the output
    logits ("logits") and the KV caches ("cache"), which keep their contents from
    one run to the next. Each is live for the whole program.
    `offset` (bytes, a multiple of 64) is set by memory planning.

    `grad_reduce = "tp"` marks a value that enters a tensor-parallel region
    (lowered from `dist.copy`): the backward pass all-reduces its gradient over tp
    before using it.

    `slotted` (set by memory planning) marks a buffer of which the arena holds one
    copy per activation slot: one that a microbatch's forward keeps for its
    backward, or that is sent to or received from another stage. Slot k's copy is
    at `offset` + k * the program's `slot_bytes`.

    Constraints:
    - (C1) `io`, when present, is "tokens", "targets" or "position" (i32; a
      position has one element), "loss" (f32, one element), or "logits" or
      "cache" (f32).
    - (C2) `grad_reduce`, when present, is "tp".
  }];
  let arguments = (ins StrAttr:$name, OptionalAttr<StrAttr>:$io,
                       OptionalAttr<I64Attr>:$offset,
                       OptionalAttr<StrAttr>:$grad_reduce,
                       UnitAttr:$slotted);
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

    `split_axes` has one entry per dimension of the parameter: -1 where every
    rank holds the whole dimension, else the mesh axis (plan::MeshAxis: 0 dp,
    1 pp, 2 tp, 3 ep) whose ranks each hold one contiguous block of it. The
    buffers are this rank's block; `global_shape` is the logical shape.

    Constraints:
    - (C1) the buffers are f32; the moments have the value's type or are 1-D with
      at most as many elements.
    - (C2) `std` is present if and only if `init` is `normal`, and is > 0.
    - (C3) `offsets`, set by memory planning, has four entries.
    - (C4) `split_axes` and `global_shape` go together, each with one entry per
      dimension of the value; every entry of `split_axes` is -1 or a mesh axis
      (0..3), no axis twice; a split dimension of `global_shape` is a multiple
      of the value's, every other one equal to it.
    - (C5) `grad_reduce`, when present, is "tp": the parameter is whole on every
      tp rank but each computes a partial sum of its gradient (norms under
      sequence parallelism see only their rank's tokens); the update unit
      all-reduces it first.
    - (C6) `tied_stage`, when present, is another pipeline stage (>= 0, not the
      program's own): that stage holds a copy of the same logical parameter (a
      tied embedding and head); the update unit sums the two copies' gradients,
      and the higher stage leaves its copy out of the gradient norm.
  }];
  let arguments = (ins StrAttr:$name, Plan_InitKindAttr:$init,
                       OptionalAttr<F64Attr>:$std, UnitAttr:$decay,
                       OptionalAttr<DenseI64ArrayAttr>:$offsets,
                       OptionalAttr<DenseI64ArrayAttr>:$split_axes,
                       OptionalAttr<DenseI64ArrayAttr>:$global_shape,
                       OptionalAttr<StrAttr>:$grad_reduce,
                       OptionalAttr<I64Attr>:$tied_stage);
  let results = (outs Plan_BufferType:$value, Plan_BufferType:$grad,
                      Plan_BufferType:$exp_avg, Plan_BufferType:$exp_avg_sq);
  let assemblyFormat = [{
    $name $init (`std` `=` $std^)? (`decay` $decay^)? attr-dict `:` type($value)
    `` custom<MomentType>(ref(type($value)), type($exp_avg))
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether some dimension is split over mesh axis `axis` (plan::MeshAxis).
    bool isSplitOver(int64_t axis);
  }];
}

def Plan_UnitOp : Plan_Op<"unit", [NoTerminator, SingleBlock,
    HasParent<"ProgramOp">]> {
  let summary = "a list of instructions run as one piece of a step";
  let description = [{
    A unit of kind `forward` is one microbatch's forward pass, `backward` its
    backward pass (or, split, `backward_input` and `backward_weight`), `comm` a
    communication unit of the step and `update` the optimizer update. The
    program's `plan.schedule` says when each runs. Units of the four microbatch
    kinds run once per microbatch; `comm` and `update` once per step. `chunk`
    (absent: 0) is the virtual chunk a microbatch unit belongs to, when the stage
    holds several (interleaved placement): each chunk has its own forward and
    backward units.

    Constraints:
    - (C1) the body holds only `plan.kernel` ops.
    - (C2) `chunk` is >= 0, and given only on a microbatch unit.
  }];
  let arguments = (ins StrAttr:$name, Plan_UnitKindAttr:$kind,
                       OptionalAttr<I64Attr>:$chunk);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$name $kind (`chunk` $chunk^)? attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether the unit runs once per microbatch (forward and backward kinds).
    bool isPerMicrobatch() { return isPerMicrobatch(getKind()); }
    /// The virtual chunk (0 unless given).
    int64_t chunkIndex() { return getChunkAttr() ? getChunkAttr().getInt() : 0; }
    static bool isPerMicrobatch(UnitKind kind) {
      return kind != UnitKind::comm && kind != UnitKind::update;
    }
  }];
}

def Plan_ScheduleOp : Plan_Op<"schedule", [NoTerminator, SingleBlock,
    HasParent<"ProgramOp">]> {
  let summary = "the ordered units of one optimizer step";
  let description = [{
    The runs (`plan.run`) of the program's units, in the order a rank executes
    them in one step. The runtime executes exactly this list; the collective check
    and `heiretsu explain` read it too.

    Constraints:
    - (C1) the body holds only `plan.run` ops.
    - (C2) every unit of the program runs: a `comm` or `update` unit exactly once,
      a microbatch unit exactly once for every microbatch 0 .. microbatches - 1
      (and virtual chunk).
    - (C3) a microbatch's backward units run after its forward units.
    - (C4) when the program has `slots`: every microbatch run has a `slot` below
      it, all runs of one microbatch (and chunk) use the same slot, and no other
      microbatch of the chunk takes that slot before the microbatch's last run
      (each chunk's slotted buffers are its own).
  }];
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "attr-dict-with-keyword $body";
  // After the runs' own verifiers (RunOp C1-C3).
  let hasRegionVerifier = 1;
}

def Plan_RunOp : Plan_Op<"run", [HasParent<"ScheduleOp">]> {
  let summary = "one run of a unit: for a microbatch (and virtual chunk)";
  let description = [{
    Constraints:
    - (C1) `unit` names a unit of the enclosing program.
    - (C2) `microbatch` is given exactly for the units that run per microbatch,
      and is in [0, microbatches) of the program.
    - (C3) `chunk` and `slot`, when given, are >= 0 (absent: 0); `slot` is given
      only with `microbatch`; `chunk` is the unit's chunk.
  }];
  let arguments = (ins StrAttr:$unit, OptionalAttr<I64Attr>:$microbatch,
                       OptionalAttr<I64Attr>:$chunk, OptionalAttr<I64Attr>:$slot);
  let assemblyFormat = [{
    $unit (`microbatch` $microbatch^)? (`chunk` $chunk^)? (`slot` $slot^)? attr-dict
  }];
  let hasVerifier = 1;
}

def Plan_KernelOp : Plan_Op<"kernel"> {
  let summary = "one runtime instruction";
  let description = [{
    `name` is an opcode of the runtime's table (runtime/plan/op_table.h): "linear",
    "attention_grad", ... `buffers` are its present buffers in signature order;
    `absent` lists the signature positions of optional buffers left out.

    Constraints:
    - (C1) `name` is a known opcode.
    - (C2) `ints` and `floats` have the opcode's number of attributes; each int is
      in its kind's range (sizes 0 .. 2^31 - 1, flags 0 or 1, a mesh axis, a
      reduction) and the table's order rules (`seq <= context`...) hold.
    - (C3) the buffers match the signature in number, element type and element
      count; `absent` names only optional slots (an `Iff(flag)` slot is absent
      exactly when its flag is 0); a variadic opcode takes one or more buffers.
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
