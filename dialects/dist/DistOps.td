//===- DistOps.td - the dist dialect: mesh, sharding, collectives ---------===//
//
// The layer where a training step meets the device mesh. `dist.mesh` declares the
// mesh (world = dp x pp x tp x ep); `#dist.sharding` says how a tensor's dimensions
// are split over mesh axes; the collectives and point-to-point ops move data along
// one axis. Every op names the mesh it uses and one axis; shape constraints depend on
// that axis's size and are checked against the mesh. Constraints are numbered per op
// (C1, C2...) and cited by the verifier and the `_invalid` tests.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_DIST_OPS
#define HEIRETSU_DIST_OPS

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

def Dist_Dialect : Dialect {
  let name = "dist";
  let cppNamespace = "::heiretsu::dist";
  let summary = "device mesh, sharding and collectives";
  let description = [{
    A `dist.sharding` discardable attribute (a `#dist.sharding`) may sit on any op
    with one ranked tensor result; its rank must match that result's.
  }];
  let useDefaultAttributePrinterParser = 1;
  let hasOperationAttrVerify = 1;
}

class Dist_Op<string mnemonic, list<Trait> traits = []>
    : Op<Dist_Dialect, mnemonic, traits>;

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

// The order of the cases is the order of the mesh axes in rank numbering:
// rank = ((dp * PP + pp) * TP + tp) * EP + ep is fixed by the plan, not here.
def Dist_AxisDp : I32EnumAttrCase<"dp", 0>;
def Dist_AxisPp : I32EnumAttrCase<"pp", 1>;
def Dist_AxisTp : I32EnumAttrCase<"tp", 2>;
def Dist_AxisEp : I32EnumAttrCase<"ep", 3>;
def Dist_AxisAttr : I32EnumAttr<"Axis", "mesh axis",
    [Dist_AxisDp, Dist_AxisPp, Dist_AxisTp, Dist_AxisEp]> {
  let cppNamespace = "::heiretsu::dist";
}

def Dist_ReduceSum : I32EnumAttrCase<"sum", 0>;
def Dist_ReduceMax : I32EnumAttrCase<"max", 1>;
def Dist_ReduceAvg : I32EnumAttrCase<"avg", 2>;
def Dist_ReduceKindAttr : I32EnumAttr<"ReduceKind", "reduction",
    [Dist_ReduceSum, Dist_ReduceMax, Dist_ReduceAvg]> {
  let cppNamespace = "::heiretsu::dist";
}

//===----------------------------------------------------------------------===//
// Sharding attribute
//===----------------------------------------------------------------------===//

def Dist_ShardingAttr : AttrDef<Dist_Dialect, "Sharding"> {
  let mnemonic = "sharding";
  let summary = "how a tensor's dimensions are split over mesh axes";
  let description = [{
    One entry per tensor dimension: the mesh axis that dimension is split over
    (evenly, in contiguous blocks, block i on axis coordinate i), or `_` when it is
    not split. `partial` lists axes over which the tensor is an unreduced partial
    sum (the state after a row-parallel matmul, before its all_reduce).

    Constraints:
    - (C1) an axis appears at most once across `dims` and `partial`.

    Example: `#dist.sharding<[tp, _]>`, `#dist.sharding<[_, _, _], partial = [tp]>`.
  }];
  let parameters = (ins ArrayRefParameter<"int32_t", "axis per dim, -1 = none">:$dims,
                        ArrayRefParameter<"int32_t", "partial-sum axes">:$partial);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

//===----------------------------------------------------------------------===//
// Mesh
//===----------------------------------------------------------------------===//

def Dist_MeshOp : Dist_Op<"mesh", [Symbol]> {
  let summary = "the device mesh: world = dp x pp x tp x ep";
  let description = [{
    Declares a named mesh with the size of each axis.

    Constraints:
    - (C1) every axis size is >= 1.

    Example:
    ```mlir
    dist.mesh @world dp = 2 pp = 1 tp = 2 ep = 1
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, I64Attr:$dp, I64Attr:$pp,
                       I64Attr:$tp, I64Attr:$ep);
  let assemblyFormat = [{
    $sym_name `dp` `=` $dp `pp` `=` $pp `tp` `=` $tp `ep` `=` $ep attr-dict
  }];
  let extraClassDeclaration = [{
    /// Size of `axis` in this mesh.
    int64_t axisSize(Axis axis);
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

// Every collective names a mesh and one axis: the group is the set of ranks that
// share all other mesh coordinates. Shape rules are checked in verifySymbolUses,
// where the mesh is resolved.
class Dist_CollectiveOp<string mnemonic, list<Trait> traits = []>
    : Dist_Op<mnemonic, !listconcat(traits,
        [DeclareOpInterfaceMethods<SymbolUserOpInterface>])>;

def Dist_AllReduceOp : Dist_CollectiveOp<"all_reduce",
    [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "reduce a tensor over one mesh axis; every rank gets the result";
  let description = [{
    Constraints:
    - (C1) `mesh` names a `dist.mesh`.
    - (C2) the result has the input's type.

    Example:
    ```mlir
    %y = dist.all_reduce %x on @world over tp reduce sum : tensor<4x64xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input, FlatSymbolRefAttr:$mesh,
                       Dist_AxisAttr:$axis, Dist_ReduceKindAttr:$reduce);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $input `on` $mesh `over` $axis `reduce` $reduce attr-dict `:` type($input)
  }];
}

def Dist_CopyOp : Dist_CollectiveOp<"copy",
    [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "enter a parallel region: identity forward, all_reduce of the gradient";
  let description = [{
    The value, held whole by every rank of the group, feeds computations split
    over the axis (Megatron's `f` before column-parallel layers). The forward pass
    is the identity; each rank's gradient of the result is a partial sum over the
    group, so the gradient of the input is its all_reduce: `copy` is the
    transpose of `all_reduce`.

    Constraints:
    - (C1) `mesh` names a `dist.mesh`.
    - (C2) the result has the input's type.

    Example:
    ```mlir
    %y = dist.copy %x on @world over tp : tensor<4x64xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input, FlatSymbolRefAttr:$mesh,
                       Dist_AxisAttr:$axis);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $input `on` $mesh `over` $axis attr-dict `:` type($input)
  }];
}

def Dist_AllGatherOp : Dist_CollectiveOp<"all_gather", [Pure]> {
  let summary = "concatenate each rank's block along one dimension";
  let description = [{
    Constraints:
    - (C1) `mesh` names a `dist.mesh`.
    - (C2) `0 <= dim < rank`.
    - (C3) result[dim] = input[dim] * size(axis); other dimensions and the element
      type are equal. Or, in the global view of a sharded graph (types are logical,
      layouts are `dist.sharding` attributes), result and input have the same type,
      whose `dim` is divisible by size(axis): the input split along `dim`, the
      result whole (sequence parallelism's gather before column-parallel layers).

    Example:
    ```mlir
    %y = dist.all_gather %x on @world over tp dim 0 : tensor<4x8xf32> -> tensor<8x8xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input, FlatSymbolRefAttr:$mesh,
                       Dist_AxisAttr:$axis, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $input `on` $mesh `over` $axis `dim` $dim attr-dict `:` type($input) `->` type($result)
  }];
}

def Dist_ReduceScatterOp : Dist_CollectiveOp<"reduce_scatter", [Pure]> {
  let summary = "reduce over one mesh axis and keep this rank's block of one dim";
  let description = [{
    Constraints:
    - (C1) `mesh` names a `dist.mesh`.
    - (C2) `0 <= dim < rank`.
    - (C3) input[dim] is divisible by size(axis) and result[dim] = input[dim] /
      size(axis); other dimensions and the element type are equal. Or, in the
      global view, result and input have the same type, whose `dim` is divisible
      by size(axis): the input a partial sum, the result split along `dim`
      (sequence parallelism's reduction after row-parallel layers).

    Example:
    ```mlir
    %y = dist.reduce_scatter %x on @world over dp dim 0 reduce sum : tensor<8x8xf32> -> tensor<4x8xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input, FlatSymbolRefAttr:$mesh,
                       Dist_AxisAttr:$axis, I64Attr:$dim,
                       Dist_ReduceKindAttr:$reduce);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $input `on` $mesh `over` $axis `dim` $dim `reduce` $reduce attr-dict
    `:` type($input) `->` type($result)
  }];
}

def Dist_AllToAllOp : Dist_CollectiveOp<"all_to_all", [Pure]> {
  let summary = "split one dimension across the group, concatenate along another";
  let description = [{
    Block i of `split_dim` goes to the rank with axis coordinate i; received blocks
    are concatenated along `concat_dim` in coordinate order (MoE dispatch/combine).

    Constraints:
    - (C1) `mesh` names a `dist.mesh`.
    - (C2) `0 <= split_dim, concat_dim < rank`.
    - (C3) input[split_dim] is divisible by size(axis); result[split_dim] =
      input[split_dim] / size, result[concat_dim] = input[concat_dim] * size (both
      apply when the dims are equal, leaving it unchanged); other dimensions and the
      element type are equal.

    Example:
    ```mlir
    %y = dist.all_to_all %x on @world over ep split 0 concat 1 : tensor<8x4xf32> -> tensor<4x8xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input, FlatSymbolRefAttr:$mesh,
                       Dist_AxisAttr:$axis, I64Attr:$split_dim, I64Attr:$concat_dim);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $input `on` $mesh `over` $axis `split` $split_dim `concat` $concat_dim attr-dict
    `:` type($input) `->` type($result)
  }];
}

def Dist_SendOp : Dist_CollectiveOp<"send"> {
  let summary = "send a tensor to the rank `offset` steps along one axis";
  let description = [{
    The peer has this rank's coordinates except along `axis`, where its coordinate
    is this rank's plus `offset` (pipeline stages: `over pp offset 1`). A rank
    whose peer falls outside the mesh does not execute the op; plans are emitted
    per stage, so this only arises in hand-written IR.

    Constraints:
    - (C1) `mesh` names a `dist.mesh`.
    - (C2) `offset != 0` and `|offset| < size(axis)`.
  }];
  let arguments = (ins AnyRankedTensor:$input, FlatSymbolRefAttr:$mesh,
                       Dist_AxisAttr:$axis, I64Attr:$offset);
  let assemblyFormat = [{
    $input `on` $mesh `over` $axis `offset` $offset attr-dict `:` type($input)
  }];
}

def Dist_RecvOp : Dist_CollectiveOp<"recv"> {
  let summary = "receive a tensor from the rank `offset` steps along one axis";
  let description = [{
    The counterpart of `dist.send`: `recv over pp offset -1` on stage s matches
    `send over pp offset 1` on stage s - 1 when their types agree.

    Constraints:
    - (C1) `mesh` names a `dist.mesh`.
    - (C2) `offset != 0` and `|offset| < size(axis)`.
  }];
  let arguments = (ins FlatSymbolRefAttr:$mesh, Dist_AxisAttr:$axis,
                       I64Attr:$offset);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    `on` $mesh `over` $axis `offset` $offset attr-dict `:` type($result)
  }];
}

#endif // HEIRETSU_DIST_OPS
