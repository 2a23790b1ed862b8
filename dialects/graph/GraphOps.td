//===- GraphOps.td - the graph dialect: model ops with value semantics ----===//
//
// The graph layer is what the frontend emits: one op per model-level operation
// (embedding, linear, norms, attention, activations, moe, cross-entropy) over
// statically shaped f32 tensors, with parameters as values that carry their logical
// name and initializer. Autodiff and the optimizer later turn a forward function of
// this dialect into a training step. Constraints are numbered per op (C1, C2...) and
// cited by the verifier and by the `_invalid` tests.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_GRAPH_OPS
#define HEIRETSU_GRAPH_OPS

include "mlir/IR/OpBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def Graph_Dialect : Dialect {
  let name = "graph";
  let cppNamespace = "::heiretsu::graph";
  let summary = "GPT model operations with value semantics";
  let description = [{
    A module produced by the frontend carries a `graph.model` dictionary attribute
    with the model's name and resolved hyperparameters, and one `func.func @forward`
    taking token ids and targets (both `tensor<BxTxi32>`) and returning the scalar
    training loss (`tensor<f32>`). Parameters are `graph.param` values; every
    parameter name is unique within a module (checked on the `graph.model` attribute).
  }];
  let hasOperationAttrVerify = 1;
  let hasRegionArgAttrVerify = 1;
}

class Graph_Op<string mnemonic, list<Trait> traits = []>
    : Op<Graph_Dialect, mnemonic, traits>;

def Graph_F32Tensor : StaticShapeTensorOf<[F32]>;
def Graph_IdTensor : StaticShapeTensorOf<[I32]>;
def Graph_F32Scalar : 0DTensorOf<[F32]> {
  let builderCall = "::mlir::RankedTensorType::get({}, $_builder.getF32Type())";
}

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def Graph_InitZeros : I32EnumAttrCase<"zeros", 0>;
def Graph_InitOnes : I32EnumAttrCase<"ones", 1>;
def Graph_InitNormal : I32EnumAttrCase<"normal", 2>;
def Graph_InitKindAttr : I32EnumAttr<"InitKind", "parameter initializer",
    [Graph_InitZeros, Graph_InitOnes, Graph_InitNormal]> {
  let cppNamespace = "::heiretsu::graph";
}

def Graph_ActGelu : I32EnumAttrCase<"gelu", 0>;
def Graph_ActSwiglu : I32EnumAttrCase<"swiglu", 1>;
def Graph_ActivationAttr : I32EnumAttr<"Activation", "MLP activation",
    [Graph_ActGelu, Graph_ActSwiglu]> {
  let cppNamespace = "::heiretsu::graph";
}

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

def Graph_ParamOp : Graph_Op<"param", [Pure]> {
  let summary = "a trainable parameter with a logical name and initializer";
  let description = [{
    Produces the parameter's full logical tensor. The runtime initializes element i
    from (seed, name, i) so every layout starts from the same model.

    Constraints:
    - (C1) `name` is non-empty and made of letters, digits, `_` and `.`.
    - (C2) every dimension of the result is positive.
    - (C3) `std` is given if and only if `init` is `normal`, and is finite and > 0.

    Example:
    ```mlir
    %w = graph.param "layers.0.attn.wq.weight" normal std = 2.0e-02 : tensor<128x128xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name, Graph_InitKindAttr:$init,
                       OptionalAttr<F64Attr>:$std);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = "$name $init (`std` `=` $std^)? attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Model ops
//===----------------------------------------------------------------------===//

def Graph_EmbeddingOp : Graph_Op<"embedding", [Pure, AttrSizedOperandSegments]> {
  let summary = "token embedding lookup, optionally plus learned positions";
  let description = [{
    `result[b, t, :] = table[ids[b, t], :] (+ positions[offset + t, :])`, with
    `offset` 0 when absent. A decode program (docs/architecture.md, "Sampling")
    passes the position of its first token as `offset`. Ids outside `[0, V)`, and
    positions outside `[0, C)`, are a runtime error, not undefined behaviour.

    Constraints:
    - (C1) `table` is `[V, D]`; `ids` is `[B, T]`.
    - (C2) the result is `[B, T, D]`.
    - (C3) if present, `positions` is `[C, D]` with `T <= C`.
    - (C4) if present, `offset` is `[1]`, and `positions` is present.

    Example:
    ```mlir
    %x = graph.embedding %wte[%ids] positions %wpe : tensor<256x64xf32>,
         tensor<4x128xi32>, tensor<128x64xf32> -> tensor<4x128x64xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$table, Graph_IdTensor:$ids,
                       Optional<Graph_F32Tensor>:$positions,
                       Optional<Graph_IdTensor>:$offset);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $table `[` $ids `]` (`positions` $positions^)? (`offset` $offset^)? attr-dict
    `:` type($table) `,` type($ids) (`,` type($positions)^)?
    (`offset` type($offset)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Graph_LinearOp : Graph_Op<"linear", [Pure]> {
  let summary = "y = x W^T (+ b), weight stored [out, in]";
  let description = [{
    Applies a dense layer over the last dimension. The weight is stored `[N, K]`
    (out, in), like PyTorch, so a tied output head is a linear with the token
    embedding table.

    Constraints:
    - (C1) `input` has rank >= 2 and last dimension K.
    - (C2) `weight` is `[N, K]`.
    - (C3) if present, `bias` is `[N]`.
    - (C4) the result has the input's shape with the last dimension N.

    Example:
    ```mlir
    %y = graph.linear %x, %w bias %b : tensor<4x128x64xf32>, tensor<256x64xf32>,
         tensor<256xf32> -> tensor<4x128x256xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_F32Tensor:$weight,
                       Optional<Graph_F32Tensor>:$bias);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:` type($input) `,` type($weight)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Graph_LayerNormOp : Graph_Op<"layernorm", [Pure,
    AllTypesMatch<["input", "result"]>, AllTypesMatch<["weight", "bias"]>]> {
  let summary = "layer normalization over the last dimension";
  let description = [{
    `y = (x - mean) / sqrt(var + eps) * weight + bias`, statistics over the last
    dimension D.

    Constraints:
    - (C1) `weight` and `bias` are `[D]`.
    - (C2) `eps` is finite and > 0.

    Example:
    ```mlir
    %y = graph.layernorm %x, %g, %b eps = 1.0e-05 : tensor<4x128x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_F32Tensor:$weight, Graph_F32Tensor:$bias,
                       F64Attr:$eps);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $bias `eps` `=` $eps attr-dict `:` type($input) `,`
    type($weight)
  }];
  let hasVerifier = 1;
}

def Graph_RMSNormOp : Graph_Op<"rmsnorm", [Pure,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "root-mean-square normalization over the last dimension";
  let description = [{
    `y = x / sqrt(mean(x^2) + eps) * weight`.

    Constraints:
    - (C1) `weight` is `[D]`, D the input's last dimension.
    - (C2) `eps` is finite and > 0.
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_F32Tensor:$weight, F64Attr:$eps);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `eps` `=` $eps attr-dict `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def Graph_AttentionOp : Graph_Op<"attention", [Pure,
    AllTypesMatch<["query", "result"]>, AllTypesMatch<["key", "value"]>]> {
  let summary = "causal multi-head attention with grouped KV heads and RoPE";
  let description = [{
    Splits `query` into `heads` heads and `key`/`value` into `kv_heads` heads of the
    same head dimension; query head h attends to KV head `h / (heads / kv_heads)`
    (grouped-query attention; `kv_heads == heads` is ordinary multi-head attention).
    When `rope` (the RoPE base theta) is present, rotary position embedding is
    applied to queries and keys (pairs `(2i, 2i+1)` of each head). Attention is
    causal with scale `1/sqrt(head_dim)`; the output concatenates the heads.

    With `cache = C` and `position` (a decode program's attention: see
    docs/architecture.md, "Sampling"), the op keeps the keys and values of C
    positions, which persist from one run of the program to the next: the T tokens
    are at positions `position .. position + T - 1` (RoPE rotates them by those
    positions), their keys and values are written there, and each attends to every
    cached position up to its own. It is the one graph op with state, and it has no
    gradient.

    Constraints:
    - (C1) `query` is `[B, T, heads * hd]`, `key` and `value` are
      `[B, T, kv_heads * hd]` with the same B, T and head dimension hd.
    - (C2) `heads >= 1`, `kv_heads >= 1` and `kv_heads` divides `heads`.
    - (C3) with `rope`, theta is finite and > 0 and hd is even.
    - (C4) `cache` and `position` come together; `position` is `[1]` and
      `cache >= T`.

    Example:
    ```mlir
    %o = graph.attention %q, %k, %v heads = 8 kv_heads = 2 rope = 1.0e+04
         : tensor<4x128x128xf32>, tensor<4x128x32xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$query, Graph_F32Tensor:$key, Graph_F32Tensor:$value,
                       I64Attr:$heads, I64Attr:$kv_heads,
                       OptionalAttr<F64Attr>:$rope,
                       Optional<Graph_IdTensor>:$position,
                       OptionalAttr<I64Attr>:$cache);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value `heads` `=` $heads `kv_heads` `=` $kv_heads
    (`rope` `=` $rope^)? (`position` $position^)? attr-dict `:` type($query) `,`
    type($key) (`,` type($position)^)?
  }];
  let hasVerifier = 1;
}

def Graph_GeluOp : Graph_Op<"gelu", [Pure, SameOperandsAndResultType]> {
  let summary = "GELU, tanh approximation (GPT-2)";
  let description = [{
    `y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, elementwise.
  }];
  let arguments = (ins Graph_F32Tensor:$input);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input)";
}

def Graph_SwigluOp : Graph_Op<"swiglu", [Pure, SameOperandsAndResultType]> {
  let summary = "SwiGLU gating: silu(gate) * up";
  let description = [{
    `y = gate * sigmoid(gate) * up`, elementwise; `gate` and `up` have one type.
  }];
  let arguments = (ins Graph_F32Tensor:$gate, Graph_F32Tensor:$up);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($gate)";
}

def Graph_AddOp : Graph_Op<"add", [Pure, SameOperandsAndResultType, Commutative]> {
  let summary = "elementwise sum (residual connections, loss terms)";
  let description = [{
    `y = lhs + rhs`; both operands and the result have one type.
  }];
  let arguments = (ins Graph_F32Tensor:$lhs, Graph_F32Tensor:$rhs);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($lhs)";
}

def Graph_MoEOp : Graph_Op<"moe", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "mixture-of-experts MLP with top-k routing and per-sequence capacity";
  let description = [{
    Routes each token to its `top_k` highest-scoring experts (softmax over
    `router` logits, weights renormalized over the chosen k), runs each expert's
    MLP and combines the results. Every decision is the sequence's own (dimension
    1 of `input` is the sequence): an expert keeps at most `ceil(capacity * T *
    top_k / experts)` (at most T) of a sequence's slots, in token order, and drops
    the rest; without `capacity` (`capacity = none` in the spec) nothing is
    dropped. The second result is the auxiliary loss already multiplied by its
    coefficients: `aux_coef * load_balance + z_coef * z_loss`, the load balance
    taken per sequence and averaged (DeepSeek-V3's sequence-wise balance loss,
    Switch Transformer's formula) and the ST-MoE router z-loss averaged over tokens.
    heiretsu-moe-dispatch lowers it into moe_route, moe_dispatch, (all_to_all),
    moe_experts, (all_to_all) and moe_combine.

    Constraints:
    - (C1) `input` is `[B, T, D]`; `router` is `[E, D]` with E = `experts`.
    - (C2) `w_in` is `[E, F, D]` and `w_out` is `[E, D, F]`.
    - (C3) `w_gate` (`[E, F, D]`) is present if and only if `act` is `swiglu`.
    - (C4) `1 <= top_k <= experts`.
    - (C5) `capacity`, when present, is finite and > 0; `aux_coef` and `z_coef` are
      finite and >= 0.
    - (C6) `result` has the input's type; `aux_loss` is a scalar.

    Example:
    ```mlir
    %y, %aux = graph.moe %x, %wr, %w1, %w2 experts = 4 top_k = 2 capacity = 1.25
        aux_coef = 1.0e-02 z_coef = 0.0 act = gelu : tensor<4x64x64xf32>,
        tensor<4x64xf32>, tensor<4x256x64xf32>, tensor<4x64x256xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_F32Tensor:$router, Graph_F32Tensor:$w_in,
                       Graph_F32Tensor:$w_out, Optional<Graph_F32Tensor>:$w_gate,
                       I64Attr:$experts, I64Attr:$top_k, OptionalAttr<F64Attr>:$capacity,
                       F64Attr:$aux_coef, F64Attr:$z_coef,
                       Graph_ActivationAttr:$act);
  let results = (outs Graph_F32Tensor:$result, Graph_F32Scalar:$aux_loss);
  let assemblyFormat = [{
    $input `,` $router `,` $w_in `,` $w_out (`gate` $w_gate^ `:` type($w_gate))?
    `experts` `=` $experts `top_k` `=` $top_k (`capacity` `=` $capacity^)?
    `aux_coef` `=` $aux_coef `z_coef` `=` $z_coef `act` `=` $act attr-dict
    `:` type($input) `,` type($router) `,` type($w_in) `,` type($w_out)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The slots an expert keeps per sequence (the capacity rule above).
    int64_t slotsPerSequence();
  }];
}

def Graph_MoERouteOp : Graph_Op<"moe_route", [Pure]> {
  let summary = "MoE routing: top-k experts, per-sequence capacity, auxiliary loss";
  let description = [{
    The first step of a lowered `graph.moe` (same routing rule and loss). For each
    token (b, t) and choice j: `choice` the expert, `pos` the row in that expert's
    region of the expert-major buffer (`b * capacity + ` the number of the
    sequence's earlier slots that expert kept, or -1 when dropped), `weight` the
    combine weight. `capacity` is the slots an expert keeps per sequence.

    Constraints:
    - (C1) `input` is `[B, T, D]`; `router` is `[E, D]` with E = `experts`.
    - (C2) `1 <= top_k <= experts` and `1 <= capacity <= T`.
    - (C3) `choice`, `pos` and `weight` are `[B, T, top_k]`; `aux_loss` is a scalar.
    - (C4) `aux_coef` and `z_coef` are finite and >= 0.

    Example:
    ```mlir
    %c, %p, %w, %aux = graph.moe_route %x, %wr experts = 4 top_k = 2 capacity = 40
        aux_coef = 1.0e-02 z_coef = 0.0 : tensor<4x64x64xf32>, tensor<4x64xf32>
        -> tensor<4x64x2xi32>, tensor<4x64x2xi32>, tensor<4x64x2xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_F32Tensor:$router,
                       I64Attr:$experts, I64Attr:$top_k, I64Attr:$capacity,
                       F64Attr:$aux_coef, F64Attr:$z_coef);
  let results = (outs Graph_IdTensor:$choice, Graph_IdTensor:$pos, Graph_F32Tensor:$weight,
                      Graph_F32Scalar:$aux_loss);
  let assemblyFormat = [{
    $input `,` $router `experts` `=` $experts `top_k` `=` $top_k `capacity` `=` $capacity
    `aux_coef` `=` $aux_coef `z_coef` `=` $z_coef attr-dict
    `:` type($input) `,` type($router) `->` type($choice) `,` type($pos) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def Graph_MoEDispatchOp : Graph_Op<"moe_dispatch", [Pure]> {
  let summary = "MoE permute: each kept slot's token into the expert-major buffer";
  let description = [{
    `result[choice, pos] = input[b, t]` for each kept slot (pos >= 0); the rows no
    slot takes are zero. The result is `[E, B * capacity, D]`: expert e's region
    holds `capacity` rows per sequence.

    Constraints:
    - (C1) `input` is `[B, T, D]`; `choice` and `pos` are `[B, T, K]`.
    - (C2) the result is `[E, B * C, D]` for some E >= K and C in [1, T].

    Example:
    ```mlir
    %buf = graph.moe_dispatch %x, %c, %p : tensor<4x64x64xf32>, tensor<4x64x2xi32>,
        tensor<4x64x2xi32> -> tensor<4x160x64xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_IdTensor:$choice, Graph_IdTensor:$pos);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $choice `,` $pos attr-dict `:` type($input) `,` type($choice) `,` type($pos)
    `->` type($result)
  }];
  let hasVerifier = 1;
}

def Graph_MoEExpertsOp : Graph_Op<"moe_experts", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "the experts' MLPs as grouped GEMMs over the expert-major buffer";
  let description = [{
    For each expert g of `input` (`[G, N, D]`, N rows each): `act(input[g] w_in[g]^T)
    w_out[g]^T`, act GELU or SwiGLU (`silu(x w_gate^T) * (x w_in^T)`). The weights
    hold the experts of the whole expert-parallel group (their `dist.sharding`
    splits dimension 0 over ep): G is this rank's share of them.

    Constraints:
    - (C1) `input` is `[G, N, D]`; `w_in` is `[E, F, D]` and `w_out` `[E, D, F]`, with
      E a multiple of G.
    - (C2) `w_gate` (`[E, F, D]`) is present if and only if `act` is `swiglu`.
    - (C3) `result` has the input's type.

    Example:
    ```mlir
    %out = graph.moe_experts %recv, %w1, %w2 act = gelu : tensor<2x320x64xf32>,
        tensor<4x256x64xf32>, tensor<4x64x256xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_F32Tensor:$w_in, Graph_F32Tensor:$w_out,
                       Optional<Graph_F32Tensor>:$w_gate, Graph_ActivationAttr:$act);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $w_in `,` $w_out (`gate` $w_gate^ `:` type($w_gate))? `act` `=` $act attr-dict
    `:` type($input) `,` type($w_in) `,` type($w_out)
  }];
  let hasVerifier = 1;
}

def Graph_MoECombineOp : Graph_Op<"moe_combine", [Pure]> {
  let summary = "MoE un-permute: each token's expert outputs, weighted and summed";
  let description = [{
    `result[b, t] = sum over the kept slots j of weight[b, t, j] *
    input[choice[b, t, j], pos[b, t, j]]`.

    Constraints:
    - (C1) `input` is `[E, B * C, D]`; `choice`, `pos` and `weight` are `[B, T, K]`.
    - (C2) the result is `[B, T, D]`, with C in [1, T].

    Example:
    ```mlir
    %y = graph.moe_combine %back, %c, %p, %w : tensor<4x160x64xf32>, tensor<4x64x2xi32>,
        tensor<4x64x2xi32>, tensor<4x64x2xf32> -> tensor<4x64x64xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$input, Graph_IdTensor:$choice, Graph_IdTensor:$pos,
                       Graph_F32Tensor:$weight);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $choice `,` $pos `,` $weight attr-dict `:` type($input) `,` type($choice) `,`
    type($pos) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Graph_CrossEntropyOp : Graph_Op<"cross_entropy", [Pure]> {
  let summary = "mean softmax cross-entropy over all positions";
  let description = [{
    `loss = mean over (b, t) of logsumexp(logits[b, t, :]) - logits[b, t, targets[b, t]]`.
    With `valid = V`, only the first V logits of each row are classes (the rest
    are vocabulary padding): the log-sum-exp runs over them alone and the others
    get no gradient.

    Constraints:
    - (C1) `logits` has rank >= 2; `targets` has the shape of `logits` without its
      last dimension.
    - (C2) the result is a scalar.
    - (C3) `valid`, when present, is in [1, logits' last dimension].

    Example:
    ```mlir
    %loss = graph.cross_entropy %logits, %targets : tensor<4x128x256xf32>, tensor<4x128xi32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$logits, Graph_IdTensor:$targets,
                       OptionalAttr<I64Attr>:$valid);
  let results = (outs Graph_F32Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $targets (`valid` `=` $valid^)? attr-dict `:` type($logits) `,` type($targets)
  }];
  let hasVerifier = 1;
}

#endif // HEIRETSU_GRAPH_OPS
