//===- Passes.td - heiretsu compiler passes --------------------------------===//

#ifndef HEIRETSU_PASSES
#define HEIRETSU_PASSES

include "mlir/Pass/PassBase.td"

def ShardPropagationPass : Pass<"heiretsu-shard-propagation", "::mlir::ModuleOp"> {
  let summary = "Annotate the forward graph with Megatron-style tensor-parallel shardings";
  let description = [{
    Reads tp from the module's `dist.mesh @world` and gives every op of @forward a
    `dist.sharding` (its result's layout over the tp axis), walking the graph in
    order (with tp = 1 there is nothing to split: the module is left unchanged):
    - a `linear` whose input is whole (or a partial sum, which collective
      insertion reduces first) is column-parallel: weight `[tp, _]`, bias `[tp]`,
      result split on its last dimension; a `linear` whose input is split on its
      last dimension is row-parallel: weight `[_, tp]`, bias whole, result a
      partial sum over tp. So QKV, the MLP up projection and the SwiGLU gate are
      column-parallel, the attention output and MLP down projections row-parallel,
      and the head is vocabulary-parallel;
    - `embedding` is vocabulary-parallel: table `[tp, _]`, result a partial sum;
    - `attention` needs q, k and v split (heads and kv_heads over tp); `gelu`,
      `swiglu` and `add` keep their operands' common layout; norms produce whole
      values; `cross_entropy` of split logits is the vocabulary-parallel loss;
    - `moe` is one tensor-parallel region, like a dense MLP (expert tensor
      parallelism): its input whole, the experts' hidden dimension split (`w_in`,
      `w_gate` `[_, tp, _]`, `w_out` `[_, _, tp]`), the router whole, the result a
      partial sum over tp;
    - a `graph.param` takes the sharding its uses ask for (a tied embedding is
      `[tp, _]` for both uses).
    The batch is split over dp by the data loader; tensors carry no dp sharding.

    With `sequence-parallel`, the values that would be whole between the
    tensor-parallel regions (the residual stream, the norms, the embedding) are
    split along the sequence instead (`[_, tp, _]`): partial sums are reduced to
    that split, and norms and adds keep it. The sequence must divide by tp.

    Errors name the value that does not divide: heads, kv_heads, a linear's
    output (d_model, MLP hidden, an expert's hidden) or the vocabulary not
    divisible by tp; a split value reaching an op that needs it whole; a parameter
    asked for two different shardings; a module without
    the mesh, or whose shardings were already propagated.
  }];
  let dependentDialects = ["::heiretsu::dist::DistDialect"];
  let options = [
    Option<"sequenceParallel", "sequence-parallel", "bool", "false",
           "split the norms' and residual stream's tokens over tp">,
  ];
}

def InsertCollectivesPass : Pass<"heiretsu-insert-collectives", "::mlir::ModuleOp"> {
  let summary = "Insert the tensor-parallel collectives the shardings imply";
  let description = [{
    After heiretsu-shard-propagation: a value that is a partial sum over tp gets
    one `dist.all_reduce` (sum) right after its producer, and all its uses read the
    reduced value (Megatron's `g` after row-parallel layers and the embedding); a
    whole value feeding column-parallel linears (or a moe) gets one `dist.copy`
    (Megatron's `f`: identity forward, all_reduce of the gradient backward) that
    those ops read. The vocabulary-parallel cross-entropy's reductions are made when it is
    lowered to plan kernels.

    With `sequence-parallel`, partial sums get a `dist.reduce_scatter` along the
    sequence instead, and the sequence-split inputs of column-parallel linears a
    `dist.all_gather` along it (both in the global view: logical types, layouts
    in `dist.sharding`), so the norms and the residual stream hold 1/tp of the
    tokens.

    Preconditions: `dist.mesh @world` exists; with its tp > 1, every op of
    @forward has a `dist.sharding` (with tp = 1 the module is left unchanged).
  }];
  let dependentDialects = ["::heiretsu::dist::DistDialect"];
  let options = [
    Option<"sequenceParallel", "sequence-parallel", "bool", "false",
           "reduce-scatter and all-gather along the sequence (see the description)">,
  ];
}

def CheckCollectivesPass : Pass<"heiretsu-check-collectives", "::mlir::ModuleOp"> {
  let summary = "Check that every rank's collectives match, before anything runs";
  let description = [{
    Builds, for every rank of the module's `dist.mesh @world`, the sequence of
    collectives its program issues in one step (the program's `plan.schedule`
    expanded: each run's unit's collectives, a `bucket_all_reduce` only in its
    unit's last run of the step), and checks that the ranks of every group (those sharing all
    mesh coordinates but one) issue the same collectives over that axis in the
    same order, with the same reduction, element counts and dtype. A mismatch
    would hang or corrupt the job at run time; here it is a compile error at the
    first differing op, naming the two ranks, their programs and what each does.
    Also checks each collective against the mesh: a block collective's `parts`
    must be its group's size. Sends and recvs (between pipeline stages, axis pp)
    must pair up: for every two stages a and b, the sends of a to b and the recvs
    of b from a come in the same number and order, each pair of the same
    microbatch and element count;
    a peer is another stage of the mesh. Then every stage's step is simulated
    under the executor's semantics (runtime/exec/executor.h: a send is posted
    and does not block, a recv blocks until its send is posted, a run on slot k
    first waits until the sends posted from slot k are received, the units of
    the step until every send is): a state where no stage can go on is a
    deadlock, a compile error naming each blocked stage, what it waits for and
    the run (unit and microbatch) it waits in.

    Rank r runs the plan.program whose `stage` is its pp coordinate (every stage
    needs one, and only one); rank coordinates follow the plan format's rule (tp
    fastest, then ep, dp, pp). Errors: no mesh, a program without a schedule.
  }];
}

def StageCutsPass : Pass<"heiretsu-stage-cuts", "::mlir::ModuleOp"> {
  let summary = "Cut the layer stack into the mesh's pp pipeline stages";
  let description = [{
    After the tensor-parallel passes, with pp > 1 in `dist.mesh @world`: replaces
    `func.func @forward` by one function per stage, `@stage_0` .. `@stage_{pp-1}`,
    cut at layer boundaries (the frontend's `graph.layer` on every op of the
    block). Stage s holds a contiguous run of layers; the first stage also the
    embedding, the last the final norm, the head and the loss. With
    `stage-layers` ("3,5,4": one count >= 1 per stage, summing to the model's
    layers) the runs are exactly those; otherwise they are balanced by a cost
    model, forward-plus-backward FLOPs per token (6 per GEMM weight element, the
    attention's products, a few per element of the embedding and the loss),
    minimizing the most expensive stage (the embedding counts on the first stage
    and the head on the last, so those hold fewer layers when the head is large).

    Each value used on a later stage is sent at the end of its stage
    (`dist.send ... over pp offset 1`) and received at the start of the next
    (`dist.recv ... over pp offset -1`, with the value's `dist.sharding`), through
    every stage in between; the order of a boundary's values is the same on both
    sides. Parameters are cloned into every stage that uses them (a tied
    embedding and head into the first and the last: heiretsu-lower-to-plan marks
    them `tied_stage`). The scalar loss is a sum of terms (cross-entropy, the MoE
    auxiliary losses): each stage returns the sum of the terms it computes (or
    nothing), so MoE layers on several stages keep their auxiliary losses, and
    the runtime sums the stages' losses. A stage's arguments are the inputs it
    reads, marked `graph.input = "tokens"` (first stage) or `"targets"` (last).

    With `virtual-stages` V > 1 (interleaved placement) the stack is cut into
    pp x V model chunks (`stage-layers` then gives one count per chunk); chunk c
    runs on stage c mod pp as its local chunk c / pp, in a function
    `@stage_S_chunk_K`, and the send from the last stage's chunk to the first
    stage's next one wraps around (`offset -(pp - 1)`).

    With pp = 1 the module is left unchanged. Errors: pp (x V) greater than the
    layers; `stage-layers` with a count < 1, a sum other than the layers, or
    another number of stages (chunks) than pp (x V), or given with pp = 1;
    `virtual-stages` < 1 or > 1 with pp = 1; a module without the mesh or @forward.
  }];
  let dependentDialects = ["::heiretsu::dist::DistDialect"];
  let options = [
    Option<"stageLayers", "stage-layers", "std::string", "\"\"",
           "layers per stage, e.g. 3,5,4 (default: balanced by the cost model)">,
    Option<"virtualStages", "virtual-stages", "int64_t", "1",
           "model chunks per stage (interleaved placement)">,
  ];
}

def MoeDispatchPass : Pass<"heiretsu-moe-dispatch", "::mlir::ModuleOp"> {
  let summary = "Lower each graph.moe into routing, dispatch, expert GEMMs and combine";
  let description = [{
    After heiretsu-stage-cuts, in every function: replaces each `graph.moe` by
    `graph.moe_route` (the router, top-k, per-sequence capacity and slots, the
    auxiliary loss), `graph.moe_dispatch` (the tokens into an expert-major buffer
    `[E, B * C, D]`, C the slots an expert keeps per sequence), with ep > 1 in
    `dist.mesh @world` a `dist.all_to_all ... over ep split 0 concat 1` (each ep
    rank receives its E / ep experts' rows from every ep rank of its group),
    `graph.moe_experts` (the grouped GEMMs), the inverse `dist.all_to_all ...
    split 1 concat 0`, and `graph.moe_combine` (the weighted sum back into token
    order). The expert weights (`w_in`, `w_gate`, `w_out`) get dimension 0 split
    over ep in their `dist.sharding`, which keeps the tp split of their hidden
    dimension; with tp > 1 the experts' output, the exchange back and the combine
    are partial sums over tp (the moe's `dist.sharding`), reduced by the
    all_reduce heiretsu-insert-collectives placed after the moe. Every op keeps
    the moe's `graph.layer`.

    Errors: experts not divisible by ep; ep > 1 in a module without a moe; expert
    weights that are not parameters; no mesh.
  }];
  let dependentDialects = ["::heiretsu::dist::DistDialect"];
}

def LowerToPlanPass : Pass<"heiretsu-lower-to-plan", "::mlir::ModuleOp"> {
  let summary = "Lower the graph forward function to a plan.program of kernels";
  let description = [{
    Turns `func.func @forward` of graph ops into a `plan.program` of stage 0, or
    each pipeline stage's `func.func @stage_S` (heiretsu-stage-cuts) into the
    program of stage S, its `dist.send` / `dist.recv` into `send` / `recv`
    kernels over pp to stage S + offset, its arguments into the "tokens" and
    "targets" buffers their `graph.input` names, and its returned scalar (if
    any) into the "loss" buffer. A parameter that two stages hold (a tied
    embedding and head) gets `tied_stage` = the other stage on both.
    For each function:
    every graph tensor becomes a `plan.buffer`, every `graph.param` a
    `plan.param` (a tp-sharded one with `split_axes` and `global_shape`), and
    every graph op one or more forward `plan.kernel`s in the unit "forward"
    (attention with RoPE becomes two `rope` kernels and an `attention` kernel).
    Local shapes divide the tp-split dimensions by the tp of `dist.mesh @world`. Kernels that
    the backward pass needs save their statistics in buffers of their own (norm
    mean/rstd, attention and cross-entropy log-sum-exp).

    Preconditions: the module has a `graph.model` attribute, `dist.mesh @world`,
    and either @forward (pp = 1) or @stage_0 .. @stage_{pp-1}.
    Postconditions: the functions are gone; each program has the units "forward"
    (the kernels), "backward" and "update" (both empty), and no schedule; no buffer
    has an offset.
  }];
  let dependentDialects = ["::heiretsu::plan_ir::PlanDialect"];
  let options = [
    Option<"microbatches", "microbatches", "int64_t", "1",
           "gradient-accumulation microbatches per optimizer step">,
  ];
}

def AutodiffPass : Pass<"heiretsu-autodiff", "::heiretsu::plan_ir::ProgramOp"> {
  let summary = "Fill the backward unit with the reverse-mode backward pass";
  let description = [{
    Walks the forward unit's kernels in reverse and emits into the (empty)
    backward unit, for each kernel whose outputs receive a gradient, its gradient
    kernels (one rule per opcode). The loss is
    seeded with 1/microbatches so the accumulated gradients are those of the mean
    loss over the step. A value with several uses gets its gradient from the first
    contribution (written) and the others (accumulated); parameter gradients are
    always accumulated into the parameter's grad buffer, which the runtime zeroes
    once per step, so a tied embedding sums its two uses.

    A value sent to the next pipeline stage gets its gradient by a recv from
    it; a value received from the previous stage sends its gradient back.

    With `split-backward` (the zb-h1 schedule), the backward unit becomes
    "backward_input" (kind backward_input) and a "backward_weight" unit follows
    it: each linear's input gradient stays in the first, its weight and bias
    gradients (linear_grad without dx) go to the second, which a schedule may
    run later; gradient buffers are then never shared between values, so the
    dy the weight unit reads is unchanged.

    Before:
      plan.unit "forward" forward { plan.kernel "linear"(%x, %w, %y) ... }
      plan.unit "backward" backward { }
    After:
      plan.unit "backward" backward {
        ... plan.kernel "linear_grad"(%dy, %x, %w, %dx, %w_grad) ... }
  }];
  let options = [
    Option<"splitBackward", "split-backward", "bool", "false",
           "split the backward into input-gradient and weight-gradient units">,
  ];
}

def OptimizerPass : Pass<"heiretsu-optimizer", "::heiretsu::plan_ir::ProgramOp"> {
  let summary = "Fill the update unit with global-norm clipping and AdamW";
  let description = [{
    Emits one `grad_norm_sq` over every parameter gradient, then one `clip_adamw`
    per parameter. Weight decay applies to matrices and embeddings (rank >= 2)
    and not to norms and biases (rank 1). The learning rate, weight decay value and
    clip threshold are runtime inputs. Gradients that are partial sums over tp
    (`grad_reduce`) are all-reduced first. Errors: no update unit, or one that is
    not empty.
  }];
}

def PlanMemoryPass : Pass<"heiretsu-plan-memory", "::heiretsu::plan_ir::ProgramOp"> {
  let summary = "Assign arena offsets by liveness, per activation slot; record the peak";
  let description = [{
    After heiretsu-schedule. Parameters, their gradients and moments live for
    the whole program and are laid out first; in a program with no backward or
    update instruction (a decode program) nothing reads a gradient or a moment,
    and all of them share one block the size of the largest parameter, after the
    values. Every other buffer lives from the
    first to the last kernel that touches it, positions counting over the units
    in program order (forward, backward, comm, update: one microbatch's, as every
    run of a unit reuses its buffers; the microbatch inputs and the loss for the
    whole step), and is placed, largest first, at the lowest 64-byte-aligned
    offset that overlaps no buffer alive at the same time. A buffer that is sent
    to another stage stays alive to the end of the microbatch's units (or of its
    unit of the step): the send completes in the background.

    When the schedule keeps several microbatches' activations at once (its runs'
    `slot`s: a pipeline stage), the buffers a microbatch carries between its
    units (touched by two per-microbatch units, or sent) are `slotted`: they are
    planned by the same rule in a region of `slot_bytes`, which the arena holds
    `slots` times, after the other buffers (live within one run, shared by all).
    Sets `offset` (and `slotted`) on buffers, `offsets` on parameters, and
    `arena_bytes`, `param_bytes`, `activation_bytes` (and `slots`, `slot_bytes`
    when there are several) on the program.
  }];
}

def DataParallelPass : Pass<"heiretsu-dp-grad-reduce", "::heiretsu::plan_ir::ProgramOp"> {
  let summary = "Average parameter gradients over the data-parallel group, in buckets";
  let description = [{
    Every dp rank runs the same program on its own slice of the global batch, so
    after the last microbatch's backward each holds the gradient of its local
    mean loss. This pass averages them over the dp of `dist.mesh @world` in
    buckets that overlap the backward pass: gradients are ordered by where the
    backward unit finishes them (the last kernel that touches each), cut into
    buckets of at most `bucket-bytes` (a larger gradient is a bucket of its own),
    and each bucket gets a `bucket_all_reduce` (axis dp, average) in the backward
    unit right after the kernel that finishes its last gradient. The runtime runs
    those once per step, in the backward unit's last run, in the background while
    the backward pass goes on, and waits for them before the first unit that is
    not a microbatch's: the norm, clipping and AdamW see the gradient of the
    global mean loss on every rank and the replicas stay identical. With dp = 1
    the program is left unchanged.

    Preconditions: the mesh exists; the optimizer pass has filled the update unit.
  }];
  let options = [
    Option<"bucketBytes", "bucket-bytes", "int64_t", "26214400",
           "most gradient bytes per bucket (default 25 MiB)">,
  ];
}

def Zero1Pass : Pass<"heiretsu-zero1", "::heiretsu::plan_ir::ProgramOp"> {
  let summary = "ZeRO-1: shard AdamW state over dp; reduce-scatter grads, all-gather params";
  let description = [{
    Instead of every data rank updating the whole model, rank r of a parameter's
    group updates its shard of each flattened parameter, [r s, (r + 1) s) with s =
    ceil(n / size), and keeps AdamW moments for that shard only (optimizer memory /
    size). The group is dp, or with expert parallelism (ep > 1 in `dist.mesh
    @world`) the data ranks, dp x ep (axis `data`), for every parameter ep does not
    split; the experts' (split over ep) shard over dp. The gradients are
    reduce-scattered (averaged over the group; over the data ranks this also
    averages the dense gradients over ep) in buckets that overlap the backward
    pass, cut as heiretsu-dp-grad-reduce cuts them (of one group each): a
    `bucket_reduce_scatter` in the backward unit right after the kernel that
    finishes its last gradient. The update unit becomes: the partial gradients'
    sum over tp (as the optimizer's), a `grad_norm_sq` over the shards summed
    over their groups, one `clip_adamw` per parameter on its shard, and an
    `all_gather` of every parameter so all ranks hold the updated model. An
    expert's state and gradient stay whole when dp = 1.

    With dp x ep = 1 there is nothing to shard: the program is left unchanged.

    Preconditions: the mesh exists; the optimizer pass has filled the update unit
    (it is rebuilt); use instead of heiretsu-dp-grad-reduce.
  }];
  let options = [
    Option<"bucketBytes", "bucket-bytes", "int64_t", "26214400",
           "most gradient bytes per reduce-scatter bucket (default 25 MiB)">,
  ];
}

def PrecisionPass : Pass<"heiretsu-precision", "::heiretsu::plan_ir::ProgramOp"> {
  let summary = "Store activations and their gradients in 16 bits (mixed precision)";
  let description = [{
    After the training step is complete (autodiff, optimizer, data-parallel
    reduction), before heiretsu-schedule. With `precision` bf16 or fp16, every
    plan.buffer whose every use is an activation operand of a kernel a backend runs
    (the inputs and outputs of linear, the norms, the activations, add, rope,
    attention, the embedding's output and the cross-entropy's logits, and their
    gradients; `zero` may clear it) becomes a memref of bf16 / f16 of the same
    shape. Everything else stays f32: parameters, their gradients and AdamW moments
    (fp32 master weights), the norms' statistics, attention's log-sum-exp, the loss,
    every buffer a collective, a send or a receive touches, the MoE buffers and the
    program's inputs and outputs. Kernels compute in float32 (runtime/exec/backend.h).
    `fp32` (the default) changes nothing.

    Constraints: `precision` is fp32, bf16 or fp16.
  }];
  let options = [
    Option<"precision", "precision", "std::string", "\"fp32\"",
           "fp32 (nothing changes), bf16 or fp16">,
  ];
}

def SchedulePass : Pass<"heiretsu-schedule", "::heiretsu::plan_ir::ProgramOp"> {
  let summary = "Write the program's plan.schedule: the order of a step's units";
  let description = [{
    Orders the runs of the program's units in one optimizer step by the pipeline
    schedule `schedule` for the program's stage of the mesh's pp (one file each
    under schedules/):
    - `1f1b` (default): stage s runs min(pp - s - 1, M) warm-up forwards, then
      one forward and one backward alternately, then the remaining backwards;
      it keeps at most pp - s microbatches' activations. With pp = 1 this is each
      microbatch's forward followed by its backward;
    - `gpipe`: every forward, then every backward; it keeps all M;
    - `interleaved` (a program of several virtual chunks, M a multiple of pp):
      Megatron-LM's interleaved 1F1B, microbatches through the chunks in groups
      of pp; each chunk has activation slots of its own;
    - `zb-h1` (a split backward: backward_input and backward_weight units): 1F1B
      with stage s's W passes lagging s microbatches behind its B passes.
    Each forward (backward) becomes a run of every forward (backward-kind) unit,
    in program order, `plan.run "<unit>" microbatch m slot k`: a microbatch takes
    the lowest free activation slot of its chunk at its forward and frees it
    after its last pass (its W pass under zb-h1; slot 0 is not printed). Then the units of the step (comm, update)
    run once each, in program order. Memory planning reads the slots.

    After (pp = 2, stage 0, M = 2, 1f1b):
      plan.schedule {
        plan.run "forward" microbatch 0
        plan.run "forward" microbatch 1 slot 1
        plan.run "backward" microbatch 0
        plan.run "backward" microbatch 1 slot 1
        plan.run "update"
      }

    Errors: no mesh; an unknown `schedule`; interleaved without virtual chunks or
    with M not a multiple of pp, virtual chunks with another schedule; zb-h1
    without a split backward or a split backward with another; a program that
    already has a schedule or lacks a forward or a backward unit.
  }];
  let options = [
    Option<"schedule", "schedule", "std::string", "\"1f1b\"",
           "the pipeline schedule: 1f1b, gpipe, interleaved or zb-h1">,
  ];
}

#endif // HEIRETSU_PASSES
