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

def Graph_EmbeddingOp : Graph_Op<"embedding", [Pure]> {
  let summary = "token embedding lookup, optionally plus learned positions";
  let description = [{
    `result[b, t, :] = table[ids[b, t], :] (+ positions[t, :])`.
    Ids outside `[0, V)` are a runtime error, not undefined behaviour.

    Constraints:
    - (C1) `table` is `[V, D]`; `ids` is `[B, T]`.
    - (C2) the result is `[B, T, D]`.
    - (C3) if present, `positions` is `[C, D]` with `T <= C`.

    Example:
    ```mlir
    %x = graph.embedding %wte[%ids] positions %wpe : tensor<256x64xf32>,
         tensor<4x128xi32>, tensor<128x64xf32> -> tensor<4x128x64xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$table, Graph_IdTensor:$ids,
                       Optional<Graph_F32Tensor>:$positions);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $table `[` $ids `]` (`positions` $positions^)? attr-dict
    `:` type($table) `,` type($ids) (`,` type($positions)^)? `->` type($result)
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

    Constraints:
    - (C1) `query` is `[B, T, heads * hd]`, `key` and `value` are
      `[B, T, kv_heads * hd]` with the same B, T and head dimension hd.
    - (C2) `heads >= 1`, `kv_heads >= 1` and `kv_heads` divides `heads`.
    - (C3) with `rope`, theta is finite and > 0 and hd is even.

    Example:
    ```mlir
    %o = graph.attention %q, %k, %v heads = 8 kv_heads = 2 rope = 1.0e+04
         : tensor<4x128x128xf32>, tensor<4x128x32xf32>
    ```
  }];
  let arguments = (ins Graph_F32Tensor:$query, Graph_F32Tensor:$key, Graph_F32Tensor:$value,
                       I64Attr:$heads, I64Attr:$kv_heads,
                       OptionalAttr<F64Attr>:$rope);
  let results = (outs Graph_F32Tensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value `heads` `=` $heads `kv_heads` `=` $kv_heads
    (`rope` `=` $rope^)? attr-dict `:` type($query) `,` type($key)
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
  let summary = "mixture-of-experts MLP with top-k routing and capacity";
  let description = [{
    Routes each token to its `top_k` highest-scoring experts (softmax over
    `router` logits, weights renormalized over the chosen k), drops tokens past an
    expert's capacity `ceil(capacity * tokens * top_k / experts)`, runs each expert's
    MLP and combines the results. The second result is the auxiliary loss already
    multiplied by its coefficients: `aux_coef * load_balance + z_coef * z_loss`
    (Switch Transformer load balancing; ST-MoE router z-loss).

    Constraints:
    - (C1) `input` is `[..., D]`; `router` is `[E, D]` with E = `experts`.
    - (C2) `w_in` is `[E, F, D]` and `w_out` is `[E, D, F]`.
    - (C3) `w_gate` (`[E, F, D]`) is present if and only if `act` is `swiglu`.
    - (C4) `1 <= top_k <= experts`.
    - (C5) `capacity` is finite and > 0; `aux_coef` and `z_coef` are finite and >= 0.
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
                       I64Attr:$experts, I64Attr:$top_k, F64Attr:$capacity,
                       F64Attr:$aux_coef, F64Attr:$z_coef,
                       Graph_ActivationAttr:$act);
  let results = (outs Graph_F32Tensor:$result, Graph_F32Scalar:$aux_loss);
  let assemblyFormat = [{
    $input `,` $router `,` $w_in `,` $w_out (`gate` $w_gate^ `:` type($w_gate))?
    `experts` `=` $experts `top_k` `=` $top_k `capacity` `=` $capacity
    `aux_coef` `=` $aux_coef `z_coef` `=` $z_coef `act` `=` $act attr-dict
    `:` type($input) `,` type($router) `,` type($w_in) `,` type($w_out)
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
