//===- ModelBuilder.cpp - spec AST -> graph dialect -------------------------===//
//
// Evaluation model: statements run top to bottom over one environment of names.
// A name holds a number (a hyperparameter, fixed once defined), a boolean, a string
// or a tensor (graph value; tensors may be reassigned, as `x = x + ...`). A bare
// name that is not defined evaluates to a *choice* (`gelu`, `learned`, `none`...),
// meaningful only as a keyword argument that takes one; anywhere else it is an
// "unknown name" error. `block { }` runs its statements once per layer; `every K`
// picks its first branch on layers K-1, 2K-1, ... (every K-th layer).
//
// The first error stops the build; errors carry the spec position.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/ModelBuilder.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>

using namespace mlir;

namespace heiretsu::frontend {
namespace {

/// Largest single dimension and largest element count of any tensor.
constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxNumel = int64_t{1} << 40;
/// Bounds the size of the graph (and the time to build it); the deepest
/// published GPTs have ~130 layers.
constexpr int64_t kMaxLayers = 1024;

struct Val {
  enum class Kind { Int, Float, Bool, Str, Choice, Tensor };
  Kind kind = Kind::Int;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s; // Str, Choice
  Value t;
  Loc loc; // where the value was written

  static Val ofInt(int64_t v, Loc l) { return {.kind = Kind::Int, .i = v, .loc = l}; }
  static Val ofFloat(double v, Loc l) { return {.kind = Kind::Float, .f = v, .loc = l}; }
  bool isNumber() const { return kind == Kind::Int || kind == Kind::Float; }
  double asDouble() const { return kind == Kind::Int ? static_cast<double>(i) : f; }
};

std::string formatDouble(double v) {
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
}

std::string describe(const Val &v) {
  switch (v.kind) {
  case Val::Kind::Int:
    return std::to_string(v.i);
  case Val::Kind::Float:
    return formatDouble(v.f);
  case Val::Kind::Bool:
    return v.b ? "true" : "false";
  case Val::Kind::Str:
    return "\"" + v.s + "\"";
  case Val::Kind::Choice:
    return v.s;
  case Val::Kind::Tensor:
    return "a tensor";
  }
  return "?";
}

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t k = 0; k < shape.size(); ++k)
    s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "]";
}

struct Binding {
  Val val;
  Loc defLoc;
};

/// Thrown internally to unwind to buildModel on the first error; never escapes.
struct BuildError {
  Error error;
};

[[noreturn]] void fail(Loc loc, std::string message) {
  throw BuildError{Error{loc, std::move(message)}};
}

/// The arguments of one builtin call, resolved against its signature.
class CallArgs {
public:
  CallArgs(const Expr &call, std::vector<Val> positional,
           std::map<std::string, Val> keywords)
      : call(call), positional(std::move(positional)),
        keywords(std::move(keywords)) {}

  /// Rejects more than `maxPositional` positional arguments and any keyword not
  /// in `allowed`.
  void expectSignature(size_t maxPositional,
                       std::initializer_list<const char *> allowed) const {
    if (positional.size() > maxPositional)
      fail(positional[maxPositional].loc,
           call.text + " takes " + std::to_string(maxPositional) +
               " positional argument" + (maxPositional == 1 ? "" : "s") +
               ", got " + std::to_string(positional.size()));
    for (const auto &[name, val] : keywords) {
      if (name == "shard")
        fail(val.loc, "per-op sharding overrides ('shard = ...') are not "
                      "supported yet");
      bool ok = false;
      std::string list;
      for (const char *a : allowed) {
        ok |= name == a;
        list += std::string(list.empty() ? "" : ", ") + a;
      }
      if (!ok)
        fail(val.loc, call.text + " has no argument '" + name + "'" +
                          (list.empty() ? "" : " (it takes: " + list + ")"));
    }
  }

  const Val &tensorAt(size_t index, const char *what) const {
    if (index >= positional.size())
      fail(call.loc, call.text + " needs " + what + " as argument " +
                         std::to_string(index + 1));
    const Val &v = positional[index];
    if (v.kind == Val::Kind::Choice)
      fail(v.loc, "unknown name '" + v.s + "'");
    if (v.kind != Val::Kind::Tensor)
      fail(v.loc, call.text + " expects " + what + " (a tensor), got " + describe(v));
    return v;
  }

  const Val *keyword(const char *name) const {
    auto it = keywords.find(name);
    return it == keywords.end() ? nullptr : &it->second;
  }

  const Expr &call;
  std::vector<Val> positional;
  std::map<std::string, Val> keywords;
};

class Builder {
public:
  Builder(MLIRContext &ctx, const std::string &file, const BuildOptions &options)
      : ctx(ctx), b(&ctx), file(file), options(options) {}

  void build(const Spec &spec, OwningOpRef<ModuleOp> &module,
             ModelSummary &summary) {
    summary.name = spec.name;
    this->summary = &summary;
    modelLoc = spec.nameLoc;
    module = ModuleOp::create(loc(spec.nameLoc));
    moduleOp = *module;
    b.setInsertionPointToEnd(moduleOp.getBody());
    dist::MeshOp::create(b, loc(spec.nameLoc), b.getStringAttr("world"),
                         b.getI64IntegerAttr(options.dp), b.getI64IntegerAttr(options.pp),
                         b.getI64IntegerAttr(options.tp), b.getI64IntegerAttr(options.ep));
    run(spec.body);
    if (!func)
      fail(spec.nameLoc, "model '" + spec.name +
                             "' builds no graph: assign 'loss = "
                             "cross_entropy(head(...), targets)'");
    auto it = env.find("loss");
    if (it == env.end())
      fail(spec.nameLoc, "model '" + spec.name + "' never assigns 'loss'");
    const Val &loss = it->second.val;
    if (options.decode) {
      // The logits of the cross-entropy that `loss` is; the auxiliary losses are
      // not computed (nothing reads them).
      if (!decodeLogits || loss.kind != Val::Kind::Tensor || loss.t != decodeLogits)
        fail(it->second.defLoc, "a decode program needs 'loss = cross_entropy(logits, "
                                "targets)' (its logits are the program's output)");
      func::ReturnOp::create(b, loc(it->second.defLoc), decodeLogits);
      auxLosses.clear();
    }
    auto lossType = RankedTensorType::get({}, b.getF32Type());
    if (!options.decode && (loss.kind != Val::Kind::Tensor || loss.t.getType() != lossType))
      fail(it->second.defLoc, "'loss' must be a scalar loss, like "
                              "cross_entropy(logits, targets)");
    if (!options.decode) {
      Value total = loss.t;
      for (Value aux : auxLosses)
        total = graph::AddOp::create(b, loc(it->second.defLoc), total, aux);
      func::ReturnOp::create(b, loc(it->second.defLoc), total);
    }

    // Record the hyperparameters on the module for later passes and tools.
    SmallVector<NamedAttribute> attrs;
    attrs.push_back(b.getNamedAttr("name", b.getStringAttr(spec.name)));
    attrs.push_back(b.getNamedAttr("batch", b.getI64IntegerAttr(batch)));
    attrs.push_back(b.getNamedAttr("seq", b.getI64IntegerAttr(seq)));
    // Defaults the spec did not write are recorded resolved.
    auto setDefault = [&](const char *name, Val v) {
      if (!env.count(name))
        env[name] = Binding{v, modelLoc};
    };
    setDefault("kv_heads", Val::ofInt(kvHeads, modelLoc));
    setDefault("head_dim", Val::ofInt(headDim, modelLoc));
    setDefault("eps", Val::ofFloat(eps, modelLoc));
    setDefault("init_std", Val::ofFloat(initStd, modelLoc));
    Val biasVal;
    biasVal.kind = Val::Kind::Bool;
    biasVal.b = useBias;
    setDefault("bias", biasVal);
    for (const auto &[name, binding] : env) {
      const Val &v = binding.val;
      if (v.kind == Val::Kind::Int)
        attrs.push_back(b.getNamedAttr(name, b.getI64IntegerAttr(v.i)));
      else if (v.kind == Val::Kind::Float)
        attrs.push_back(b.getNamedAttr(name, b.getF64FloatAttr(v.f)));
      else if (v.kind == Val::Kind::Bool)
        attrs.push_back(b.getNamedAttr(name, b.getBoolAttr(v.b)));
      else
        continue;
      summary.hyperparameters.emplace_back(name, describe(v));
    }
    moduleOp->setAttr(graph::kModelAttrName, b.getDictionaryAttr(attrs));
    summary.tokenizer = resolveTokenizer();
    summary.layers = layers;
    summary.batch = batch;
    summary.seq = seq;
    summary.activeParamCount = 0;
    for (const ParamSummary &p : summary.params)
      summary.activeParamCount += p.experts ? p.numel / p.experts * p.topK : p.numel;
    warnUnread(summary);
  }

private:
  /// A warning for each hyperparameter (a number, boolean or string the spec
  /// assigns; all are top-level, before the graph) that no expression and no
  /// lookup of the builder read: a misspelled name (`kv_head`) or a value a
  /// builtin only takes as a keyword (`hidden`, `rope_theta`). Tensors (`x`,
  /// `loss`, a block's locals) are the graph's and never warn.
  void warnUnread(ModelSummary &summary) {
    // The names the builder itself reads (ensureGraph, attention, resolveTokenizer).
    static const char *const known[] = {"vocab",   "padded_vocab", "context", "d_model",
                                        "layers",  "heads",        "kv_heads", "head_dim",
                                        "eps",     "init_std",     "bias",    "tokenizer"};
    // Values a builtin reads only when passed as its keyword: what it does
    // instead, and how to pass it.
    static const std::pair<const char *, const char *> keywords[] = {
        {"hidden", "mlp() and moe() default hidden to 4 * d_model unless given"},
        {"experts", "moe() reads it only when given"},
        {"top_k", "moe() defaults top_k to min(2, experts) unless given"},
        {"capacity", "moe() defaults capacity to 1.25 unless given"},
        {"aux_loss", "moe() defaults aux_loss to 0.01 unless given"},
        {"z_loss", "moe() defaults z_loss to 0.0 unless given"},
        {"act", "mlp() and moe() default act to gelu unless given"},
        {"positions", "embedding() defaults positions to none unless given"},
        {"tied", "head() defaults tied to true unless given"},
        {"rope", "attention() applies no RoPE unless given"}};
    auto keywordHint = [&](const std::string &name, const std::string &keyword,
                           const char *instead) {
      return ": " + std::string(instead) + " '" + keyword + " = " + name + "'";
    };
    std::set<std::string> defined(hyperparameterOrder.begin(), hyperparameterOrder.end());
    for (const std::string &name : hyperparameterOrder) {
      if (readNames.count(name))
        continue;
      std::string hint;
      for (const auto &[keyword, instead] : keywords)
        if (name == keyword)
          hint = keywordHint(name, keyword, instead);
      if (hint.empty()) {
        // The closest name the builder reads that the spec does not define.
        llvm::StringRef target = name;
        unsigned best = 3;
        std::string bestName;
        for (const char *k : known) {
          if (defined.count(k))
            continue;
          unsigned d = target.edit_distance(k, /*AllowReplacements=*/true, best);
          if (d < best && d * 3 <= name.size()) {
            best = d;
            bestName = k;
          }
        }
        if (!bestName.empty())
          hint = " (did you mean '" + bestName + "'?)";
      }
      if (hint.empty()) {
        // A name that holds what a keyword takes: `ffn_hidden`, `num_experts`,
        // `rope_theta`.
        for (const auto &[keyword, instead] : keywords) {
          bool rope = std::string(keyword) == "rope" &&
                      (name.find("rope") != std::string::npos ||
                       name.find("theta") != std::string::npos);
          bool part = (std::string(keyword) == "hidden" || std::string(keyword) == "experts") &&
                      name.find(keyword) != std::string::npos;
          if (rope || part) {
            hint = keywordHint(name, keyword, instead);
            break;
          }
        }
      }
      if (hint.empty())
        hint = "; use it or remove it";
      summary.warnings.push_back(
          Error{env.at(name).defLoc, "'" + name + "' is assigned but never read" + hint});
    }
  }

  /// `tokenizer = "byte"|"gpt2"`, checked against the vocabulary; without it, the
  /// tokenizer the vocabulary implies (256: byte, 50257: gpt2) or none.
  std::string resolveTokenizer() {
    auto it = env.find("tokenizer");
    readNames.insert("tokenizer");
    if (it == env.end())
      return vocab == 256 ? "byte" : vocab == 50257 ? "gpt2" : "";
    const Val &v = it->second.val;
    bool text = v.kind == Val::Kind::Choice || v.kind == Val::Kind::Str;
    if (!text || (v.s != "byte" && v.s != "gpt2"))
      fail(it->second.defLoc, "tokenizer must be byte or gpt2, got " + describe(v));
    int64_t needed = v.s == "byte" ? 256 : 50257;
    if (vocab < needed)
      fail(it->second.defLoc, "tokenizer " + v.s + " has " + std::to_string(needed) +
                                  " token ids, more than vocab = " + std::to_string(vocab));
    return v.s;
  }

  /// Records how the graph is built (ModelSummary::architecture); a fact two
  /// calls disagree on is "mixed".
  void note(const std::string &key, const std::string &value) {
    auto [it, fresh] = summary->architecture.emplace(key, value);
    if (!fresh && it->second != value)
      it->second = "mixed";
  }

  //===--------------------------------------------------------------------===//
  // Statements
  //===--------------------------------------------------------------------===//

  void run(const StmtList &stmts) {
    for (const Stmt &stmt : stmts) {
      switch (stmt.kind) {
      case Stmt::Kind::Assign:
        assign(stmt);
        break;
      case Stmt::Kind::Block:
        runBlock(stmt);
        break;
      case Stmt::Kind::Every:
        if (layer < 0)
          fail(stmt.loc, "'every' is only allowed inside 'block'");
        {
          Val k = eval(*stmt.value);
          int64_t period = positiveInt(k, "every");
          run((layer + 1) % period == 0 ? stmt.body : stmt.otherwise);
        }
        break;
      }
    }
  }

  void runBlock(const Stmt &stmt) {
    if (layer >= 0)
      fail(stmt.loc, "'block' cannot be nested");
    if (blockDone)
      fail(stmt.loc, "a model has one 'block'; it is repeated 'layers' times");
    ensureGraph(stmt.loc);
    Block &body = func.getBody().front();
    for (layer = 0; layer < layers; ++layer) {
      roleCounts.clear();
      Operation *before = body.empty() ? nullptr : &body.back();
      run(stmt.body);
      // Every op of this layer says so: pipeline stage cuts fall between layers.
      auto it = before ? std::next(before->getIterator()) : body.begin();
      for (; it != body.end(); ++it)
        it->setAttr(graph::kLayerAttrName, b.getI64IntegerAttr(layer));
    }
    layer = -1;
    roleCounts.clear();
    blockDone = true;
  }

  void assign(const Stmt &stmt) {
    // `name`, `batch` and `seq` are keys of the graph.model attribute.
    static const char *reserved[] = {"tokens", "targets", "true",  "false",
                                     "none",   "model",   "block", "every",
                                     "else",   "name",    "batch", "seq"};
    for (const char *r : reserved)
      if (stmt.name == r)
        fail(stmt.nameLoc, "'" + stmt.name + "' is reserved and cannot be assigned");
    Val v = eval(*stmt.value);
    if (v.kind == Val::Kind::Choice)
      fail(v.loc, "unknown name '" + v.s + "'");
    auto it = env.find(stmt.name);
    if (it != env.end()) {
      bool tensorUpdate = v.kind == Val::Kind::Tensor &&
                          it->second.val.kind == Val::Kind::Tensor;
      if (!tensorUpdate)
        fail(stmt.nameLoc, "'" + stmt.name + "' is already defined at " +
                               std::to_string(it->second.defLoc.line) + ":" +
                               std::to_string(it->second.defLoc.col));
      it->second.val = v;
      return;
    }
    if (v.kind != Val::Kind::Tensor && func)
      fail(stmt.nameLoc, "hyperparameter '" + stmt.name +
                             "' is defined after the graph began at " +
                             std::to_string(graphLoc.line) + ":" +
                             std::to_string(graphLoc.col) +
                             "; define hyperparameters first");
    env[stmt.name] = Binding{v, stmt.nameLoc};
    if (v.kind != Val::Kind::Tensor)
      hyperparameterOrder.push_back(stmt.name);
  }

  //===--------------------------------------------------------------------===//
  // Expressions
  //===--------------------------------------------------------------------===//

  Val eval(const Expr &e) {
    switch (e.kind) {
    case Expr::Kind::Int:
      return Val::ofInt(e.intValue, e.loc);
    case Expr::Kind::Float:
      return Val::ofFloat(e.floatValue, e.loc);
    case Expr::Kind::String:
      return Val{.kind = Val::Kind::Str, .s = e.text, .loc = e.loc};
    case Expr::Kind::Name: {
      if (e.text == "true" || e.text == "false")
        return Val{.kind = Val::Kind::Bool, .b = e.text == "true", .loc = e.loc};
      if (e.text == "tokens" || e.text == "targets") {
        ensureGraph(e.loc);
        return Val{.kind = Val::Kind::Tensor,
                   .t = func.getArgument(e.text == "tokens" ? 0 : 1),
                   .loc = e.loc};
      }
      auto it = env.find(e.text);
      if (it != env.end()) {
        readNames.insert(e.text);
        Val v = it->second.val;
        v.loc = e.loc;
        return v;
      }
      return Val{.kind = Val::Kind::Choice, .s = e.text, .loc = e.loc};
    }
    case Expr::Kind::Neg: {
      Val v = eval(*e.lhs);
      requireNumber(v, "'-'");
      if (v.kind == Val::Kind::Float)
        return Val::ofFloat(-v.f, e.loc);
      if (v.i == INT64_MIN)
        fail(e.loc, "integer overflow in '-'");
      return Val::ofInt(-v.i, e.loc);
    }
    case Expr::Kind::Binary:
      return binary(e);
    case Expr::Kind::Call:
      return call(e);
    }
    fail(e.loc, "unsupported expression");
  }

  void requireNumber(const Val &v, const std::string &context) {
    if (v.kind == Val::Kind::Choice)
      fail(v.loc, "unknown name '" + v.s + "'");
    if (!v.isNumber())
      fail(v.loc, context + " needs a number, got " + describe(v));
  }

  Val binary(const Expr &e) {
    Val l = eval(*e.lhs), r = eval(*e.rhs);
    std::string opName = e.op == 'f' ? "//" : std::string(1, e.op);
    if (e.op == '+' && l.kind == Val::Kind::Tensor && r.kind == Val::Kind::Tensor) {
      if (l.t.getType() != r.t.getType())
        fail(e.loc, "cannot add " + typeStr(l.t) + " and " + typeStr(r.t));
      return Val{.kind = Val::Kind::Tensor,
                 .t = graph::AddOp::create(b, loc(e.loc), l.t, r.t),
                 .loc = e.loc};
    }
    requireNumber(l, "'" + opName + "'");
    requireNumber(r, "'" + opName + "'");
    if (l.kind == Val::Kind::Int && r.kind == Val::Kind::Int) {
      int64_t out = 0;
      bool overflow = false;
      switch (e.op) {
      case '+': overflow = __builtin_add_overflow(l.i, r.i, &out); break;
      case '-': overflow = __builtin_sub_overflow(l.i, r.i, &out); break;
      case '*': overflow = __builtin_mul_overflow(l.i, r.i, &out); break;
      case '/':
        if (r.i == 0)
          fail(e.loc, "division by zero");
        return Val::ofFloat(static_cast<double>(l.i) / static_cast<double>(r.i), e.loc);
      case 'f':
      case '%': {
        if (r.i == 0)
          fail(e.loc, e.op == '%' ? "modulo by zero" : "division by zero");
        if (l.i == INT64_MIN && r.i == -1)
          fail(e.loc, "integer overflow in '" + opName + "'");
        int64_t q = l.i / r.i, m = l.i % r.i;
        if (m != 0 && ((m < 0) != (r.i < 0))) { // floor, as in Python
          --q;
          m += r.i;
        }
        out = e.op == 'f' ? q : m;
        break;
      }
      }
      if (overflow)
        fail(e.loc, "integer overflow in '" + opName + "'");
      return Val::ofInt(out, e.loc);
    }
    double x = l.asDouble(), y = r.asDouble(), out = 0;
    switch (e.op) {
    case '+': out = x + y; break;
    case '-': out = x - y; break;
    case '*': out = x * y; break;
    case '/':
    case 'f':
    case '%':
      if (y == 0)
        fail(e.loc, e.op == '%' ? "modulo by zero" : "division by zero");
      out = e.op == '/' ? x / y : e.op == 'f' ? std::floor(x / y) : x - std::floor(x / y) * y;
      break;
    }
    if (!std::isfinite(out))
      fail(e.loc, "result of '" + opName + "' is not a finite number");
    return Val::ofFloat(out, e.loc);
  }

  //===--------------------------------------------------------------------===//
  // Hyperparameters
  //===--------------------------------------------------------------------===//

  /// The builder's own read of a hyperparameter (it counts as read).
  const Binding *lookup(const char *name) {
    readNames.insert(name);
    auto it = env.find(name);
    return it == env.end() ? nullptr : &it->second;
  }

  int64_t positiveInt(const Val &v, const std::string &what) {
    if (v.kind == Val::Kind::Choice)
      fail(v.loc, "unknown name '" + v.s + "'");
    if (v.kind == Val::Kind::Float && v.f == std::floor(v.f) && std::fabs(v.f) < 9e15)
      return positiveInt(Val::ofInt(static_cast<int64_t>(v.f), v.loc), what);
    if (v.kind != Val::Kind::Int)
      fail(v.loc, "'" + what + "' must be a positive integer, got " + describe(v));
    if (v.i <= 0)
      fail(v.loc, "'" + what + "' must be a positive integer, got " + describe(v));
    if (v.i > kMaxDim)
      fail(v.loc, "'" + what + "' is " + describe(v) + ", larger than the limit " +
                      std::to_string(kMaxDim));
    return v.i;
  }

  double positiveFloat(const Val &v, const std::string &what) {
    requireNumber(v, "'" + what + "'");
    if (!(v.asDouble() > 0))
      fail(v.loc, "'" + what + "' must be > 0, got " + describe(v));
    return v.asDouble();
  }

  double nonNegativeFloat(const Val &v, const std::string &what) {
    requireNumber(v, "'" + what + "'");
    if (v.asDouble() < 0)
      fail(v.loc, "'" + what + "' must be >= 0, got " + describe(v));
    return v.asDouble();
  }

  bool boolean(const Val &v, const std::string &what) {
    if (v.kind != Val::Kind::Bool)
      fail(v.loc, "'" + what + "' must be true or false, got " + describe(v));
    return v.b;
  }

  /// A required hyperparameter as a positive integer, reported at its definition.
  int64_t requiredInt(const char *name, Loc useLoc) {
    const Binding *bnd = lookup(name);
    if (!bnd)
      fail(useLoc, std::string("missing hyperparameter '") + name +
                       "' (vocab, context, d_model, layers and heads must be "
                       "defined before the model's layers)");
    Val v = bnd->val;
    v.loc = bnd->defLoc;
    return positiveInt(v, name);
  }

  /// Checks the model-wide hyperparameters once, before the first graph op, and
  /// creates the forward function.
  void ensureGraph(Loc useLoc) {
    if (func)
      return;
    graphLoc = useLoc;
    vocab = requiredInt("vocab", useLoc);
    paddedVocab = vocab;
    if (lookup("padded_vocab")) {
      paddedVocab = requiredInt("padded_vocab", useLoc);
      if (paddedVocab < vocab)
        fail(lookup("padded_vocab")->defLoc,
             "padded_vocab (" + std::to_string(paddedVocab) + ") must be at least vocab (" +
                 std::to_string(vocab) + ")");
    }
    context = requiredInt("context", useLoc);
    dModel = requiredInt("d_model", useLoc);
    layers = requiredInt("layers", useLoc);
    if (layers > kMaxLayers)
      fail(lookup("layers")->defLoc, "'layers' is " + std::to_string(layers) +
                                         "; the limit is " + std::to_string(kMaxLayers));
    heads = requiredInt("heads", useLoc);
    kvHeads = lookup("kv_heads") ? requiredInt("kv_heads", useLoc) : heads;
    if (const Binding *hd = lookup("head_dim")) {
      headDim = requiredInt("head_dim", useLoc);
      (void)hd;
    } else {
      if (dModel % heads != 0)
        fail(lookup("heads")->defLoc,
             "d_model (" + std::to_string(dModel) +
                 ") must be divisible by heads (" + std::to_string(heads) + ")");
      headDim = dModel / heads;
    }
    if (heads % kvHeads != 0)
      fail(lookup("kv_heads")->defLoc,
           "heads (" + std::to_string(heads) + ") must be divisible by kv_heads (" +
               std::to_string(kvHeads) + ")");
    if (const Binding *e = lookup("eps")) {
      Val v = e->val;
      v.loc = e->defLoc;
      eps = positiveFloat(v, "eps");
    }
    if (const Binding *s = lookup("init_std")) {
      Val v = s->val;
      v.loc = s->defLoc;
      initStd = positiveFloat(v, "init_std");
    }
    if (const Binding *bb = lookup("bias")) {
      Val v = bb->val;
      v.loc = bb->defLoc;
      useBias = boolean(v, "bias");
    }
    batch = options.batch;
    seq = options.seq ? options.seq : context;
    if (batch <= 0)
      fail(modelLoc, "micro-batch size must be positive, got " + std::to_string(batch));
    if (seq <= 0 || seq > context)
      fail(lookup("context")->defLoc,
           "sequence length " + std::to_string(seq) +
               " must be between 1 and the model's context (" +
               std::to_string(context) + ")");

    auto idType = checkedType({batch, seq}, b.getI32Type(), modelLoc);
    auto lossType = RankedTensorType::get({}, b.getF32Type());
    b.setInsertionPointToEnd(moduleOp.getBody());
    if (options.decode) {
      // @forward(tokens, position) -> logits; the roles name the inputs.
      auto positionType = RankedTensorType::get({1}, b.getI32Type());
      auto logitsType = checkedType({batch, seq, paddedVocab}, b.getF32Type(), modelLoc);
      func = func::FuncOp::create(b, loc(modelLoc), "forward",
                                  b.getFunctionType({idType, positionType}, {logitsType}));
      func.setArgAttr(0, graph::kInputAttrName, b.getStringAttr("tokens"));
      func.setArgAttr(1, graph::kInputAttrName, b.getStringAttr("position"));
    } else {
      func = func::FuncOp::create(b, loc(modelLoc), "forward",
                                  b.getFunctionType({idType, idType}, {lossType}));
    }
    Block *entry = func.addEntryBlock();
    b.setInsertionPointToEnd(entry);
  }

  //===--------------------------------------------------------------------===//
  // Tensors and parameters
  //===--------------------------------------------------------------------===//

  RankedTensorType checkedType(ArrayRef<int64_t> shape, Type elt, Loc at) {
    int64_t numel = 1;
    for (int64_t d : shape)
      if (d <= 0 || d > kMaxDim || __builtin_mul_overflow(numel, d, &numel) ||
          numel > kMaxNumel)
        fail(at, "tensor of shape " + shapeStr(shape) +
                     " is too large (limit " + std::to_string(kMaxNumel) +
                     " elements, " + std::to_string(kMaxDim) + " per dimension)");
    return RankedTensorType::get(shape, elt);
  }

  RankedTensorType f32(ArrayRef<int64_t> shape, Loc at) {
    return checkedType(shape, b.getF32Type(), at);
  }

  std::string typeStr(Value v) {
    return shapeStr(cast<RankedTensorType>(v.getType()).getShape());
  }

  /// The name prefix for a call: `layers.<i>.<role>` inside the block (a second
  /// use of a role in one layer gets `<role>2`), `<role>` outside; `name = "..."`
  /// overrides the role.
  std::string prefix(const CallArgs &args, const std::string &role) {
    std::string base = role;
    if (const Val *n = args.keyword("name")) {
      if (n->kind != Val::Kind::Str || n->s.empty())
        fail(n->loc, "'name' must be a non-empty string");
      for (char c : n->s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'))
          fail(n->loc, "'name' may contain only letters, digits, '_' and '.', got \"" +
                           n->s + "\"");
      base = n->s;
    }
    int count = ++roleCounts[base];
    // Norms are numbered from 1 in a layer (norm1, norm2); other roles only from
    // their second use (attn, attn2).
    bool numbered = count > 1 || (role == "norm" && !args.keyword("name"));
    std::string p = numbered ? base + std::to_string(count) : base;
    return layer >= 0 ? "layers." + std::to_string(layer) + "." + p : p;
  }

  Value param(const std::string &name, ArrayRef<int64_t> shape,
              graph::InitKind init, Loc at, double stdDev = 0) {
    if (!paramNames.insert(name).second)
      fail(at, "parameter '" + name + "' is defined twice; give one a "
                                       "different name = \"...\"");
    auto type = f32(shape, at);
    int64_t numel = type.getNumElements();
    if (__builtin_add_overflow(summary->paramCount, numel, &summary->paramCount) ||
        summary->paramCount > kMaxNumel)
      fail(at, "the model has more than " + std::to_string(kMaxNumel) + " parameters");
    summary->params.push_back(
        {name, std::vector<int64_t>(shape.begin(), shape.end()), numel, layer});
    FloatAttr stdAttr;
    if (init == graph::InitKind::normal)
      stdAttr = b.getF64FloatAttr(stdDev);
    return graph::ParamOp::create(b, loc(at), type, b.getStringAttr(name),
                                  graph::InitKindAttr::get(&ctx, init), stdAttr);
  }

  Value normalParam(const std::string &name, ArrayRef<int64_t> shape, Loc at,
                    double stdDev) {
    return param(name, shape, graph::InitKind::normal, at, stdDev);
  }

  /// Norms are `layers.<i>.norm<k>` in the block, `embed_norm` before it and
  /// `final_norm` after it.
  std::string normRole() const {
    return layer >= 0 ? "norm" : blockDone ? "final_norm" : "embed_norm";
  }

  /// Residual output projections get GPT-2's 1/sqrt(2 * layers) scaled init.
  double residualStd() const { return initStd / std::sqrt(2.0 * layers); }

  Value linear(Value x, const std::string &name, int64_t out, bool bias, Loc at,
               double stdDev) {
    auto xt = cast<RankedTensorType>(x.getType());
    int64_t in = xt.getShape().back();
    Value w = normalParam(name + ".weight", {out, in}, at, stdDev);
    Value bv;
    if (bias)
      bv = param(name + ".bias", {out}, graph::InitKind::zeros, at);
    SmallVector<int64_t> shape(xt.getShape());
    shape.back() = out;
    return graph::LinearOp::create(b, loc(at), f32(shape, at), x, w, bv);
  }

  bool biasArg(const CallArgs &args) {
    const Val *v = args.keyword("bias");
    return v ? boolean(*v, "bias") : useBias;
  }

  double epsArg(const CallArgs &args) {
    const Val *v = args.keyword("eps");
    return v ? positiveFloat(*v, "eps") : eps;
  }

  int64_t intArg(const CallArgs &args, const char *name, int64_t dflt) {
    const Val *v = args.keyword(name);
    return v ? positiveInt(*v, name) : dflt;
  }

  /// A keyword that takes one of `choices`; returns its index (or `dflt`).
  size_t choiceArg(const CallArgs &args, const char *name,
                   std::initializer_list<const char *> choices, size_t dflt) {
    const Val *v = args.keyword(name);
    if (!v)
      return dflt;
    std::string list;
    size_t index = 0;
    for (const char *c : choices) {
      if ((v->kind == Val::Kind::Choice || v->kind == Val::Kind::Str) && v->s == c)
        return index;
      list += std::string(index ? ", " : "") + c;
      ++index;
    }
    fail(v->loc, "'" + std::string(name) + "' must be one of " + list + ", got " +
                     describe(*v));
  }

  /// The input of a block-level op: a [B, T, D] activation.
  Value activation(const CallArgs &args) {
    Value x = args.tensorAt(0, "the activations").t;
    auto t = cast<RankedTensorType>(x.getType());
    if (t.getRank() != 3 || t.getShape().back() != dModel)
      fail(args.positional[0].loc, args.call.text + " expects activations of shape [" +
                                       std::to_string(batch) + ", " + std::to_string(seq) +
                                       ", " + std::to_string(dModel) + "], got " + typeStr(x));
    return x;
  }

  //===--------------------------------------------------------------------===//
  // Builtins
  //===--------------------------------------------------------------------===//

  Val call(const Expr &e) {
    std::vector<Val> positional;
    std::map<std::string, Val> keywords;
    for (const Arg &a : e.args) {
      Val v = eval(*a.value);
      v.loc = a.value->loc;
      if (a.keyword.empty())
        positional.push_back(std::move(v));
      else
        keywords.emplace(a.keyword, std::move(v));
    }
    CallArgs args(e, std::move(positional), std::move(keywords));
    const std::string &f = e.text;
    if (f == "round_up" || f == "min" || f == "max")
      return numericBuiltin(args);

    // The graph builtins and what builds each.
    static const std::pair<const char *, Value (Builder::*)(const CallArgs &)> graphBuiltins[] = {
        {"embedding", &Builder::embedding}, {"layernorm", &Builder::layernorm},
        {"rmsnorm", &Builder::rmsnorm},     {"attention", &Builder::attention},
        {"mlp", &Builder::mlp},             {"moe", &Builder::moe},
        {"head", &Builder::head},           {"cross_entropy", &Builder::crossEntropy}};
    const auto *builtin =
        llvm::find_if(graphBuiltins, [&](const auto &g) { return f == g.first; });
    if (builtin == std::end(graphBuiltins))
      fail(e.loc, "unknown function '" + f +
                      "' (known: embedding, layernorm, rmsnorm, attention, mlp, "
                      "moe, head, cross_entropy, round_up, min, max)");
    ensureGraph(e.loc);
    return Val{.kind = Val::Kind::Tensor, .t = (this->*builtin->second)(args), .loc = e.loc};
  }

  Val numericBuiltin(const CallArgs &args) {
    const std::string &f = args.call.text;
    args.expectSignature(2, {});
    if (args.positional.size() != 2)
      fail(args.call.loc, f + " takes 2 arguments, got " +
                              std::to_string(args.positional.size()));
    const Val &x = args.positional[0], &y = args.positional[1];
    requireNumber(x, f);
    requireNumber(y, f);
    if (f == "round_up") {
      int64_t m = positiveInt(y, "round_up multiple");
      if (x.kind == Val::Kind::Int) {
        int64_t q = x.i / m + (x.i % m > 0 ? 1 : 0), out;
        if (__builtin_mul_overflow(q, m, &out))
          fail(args.call.loc, "result of round_up is out of range");
        return Val::ofInt(out, args.call.loc);
      }
      double q = std::ceil(x.asDouble() / static_cast<double>(m));
      if (!(std::fabs(q * m) < 9e15))
        fail(args.call.loc, "result of round_up is out of range");
      return Val::ofInt(static_cast<int64_t>(q) * m, args.call.loc);
    }
    bool pickX = f == "min" ? x.asDouble() <= y.asDouble() : x.asDouble() >= y.asDouble();
    Val r = pickX ? x : y;
    r.loc = args.call.loc;
    return r;
  }

  Value embedding(const CallArgs &args) {
    args.expectSignature(1, {"positions", "name"});
    Value ids = args.tensorAt(0, "the token ids").t;
    if (ids != func.getArgument(0))
      fail(args.positional[0].loc, "embedding takes 'tokens'");
    std::string p = prefix(args, "embed");
    size_t pos = choiceArg(args, "positions", {"learned", "none"}, 1);
    Loc at = args.call.loc;
    Value table = normalParam(args.keyword("name") ? p + ".tokens" : "wte",
                              {paddedVocab, dModel}, at, initStd);
    tokenTable = table;
    Value positions;
    note("positions", pos == 0 ? "learned" : "none");
    if (pos == 0)
      positions = normalParam(args.keyword("name") ? p + ".positions" : "wpe",
                              {context, dModel}, at, initStd);
    // A decode program's positions start at its input `position`.
    Value offset = options.decode && positions ? func.getArgument(1) : Value();
    return graph::EmbeddingOp::create(b, loc(at), f32({batch, seq, dModel}, at),
                                      table, ids, positions, offset);
  }

  Value layernorm(const CallArgs &args) { return norm(args, /*withBias=*/true); }
  Value rmsnorm(const CallArgs &args) { return norm(args, /*withBias=*/false); }

  /// layernorm (a weight and a bias) or rmsnorm (a weight) of the activations.
  Value norm(const CallArgs &args, bool withBias) {
    args.expectSignature(1, {"eps", "name"});
    Value x = args.tensorAt(0, "the activations").t;
    int64_t d = cast<RankedTensorType>(x.getType()).getShape().back();
    std::string p = prefix(args, normRole());
    Loc at = args.call.loc;
    Value g = param(p + ".weight", {d}, graph::InitKind::ones, at);
    Value bias = withBias ? param(p + ".bias", {d}, graph::InitKind::zeros, at) : Value();
    FloatAttr eps = b.getF64FloatAttr(epsArg(args));
    note("norm", withBias ? "layernorm" : "rmsnorm");
    note("norm_eps", formatDouble(eps.getValueAsDouble()));
    if (withBias)
      return graph::LayerNormOp::create(b, loc(at), x, g, bias, eps);
    return graph::RMSNormOp::create(b, loc(at), x, g, eps);
  }

  Value attention(const CallArgs &args) {
    args.expectSignature(1, {"heads", "kv_heads", "rope", "bias", "name"});
    Value x = activation(args);
    Loc at = args.call.loc;
    int64_t h = intArg(args, "heads", heads);
    int64_t kv = intArg(args, "kv_heads", args.keyword("heads") ? h : kvHeads);
    int64_t hd = headDim;
    if (args.keyword("heads") && !lookup("head_dim")) {
      if (dModel % h != 0)
        fail(args.keyword("heads")->loc,
             "d_model (" + std::to_string(dModel) + ") must be divisible by heads (" +
                 std::to_string(h) + ")");
      hd = dModel / h;
    }
    if (h % kv != 0)
      fail(args.keyword("kv_heads") ? args.keyword("kv_heads")->loc : at,
           "heads (" + std::to_string(h) + ") must be divisible by kv_heads (" +
               std::to_string(kv) + ")");
    FloatAttr rope;
    if (const Val *r = args.keyword("rope")) {
      bool none = (r->kind == Val::Kind::Choice || r->kind == Val::Kind::Str) &&
                  r->s == "none";
      if (!none) {
        double theta = positiveFloat(*r, "rope");
        if (hd % 2 != 0)
          fail(r->loc, "rope needs an even head dimension, got " + std::to_string(hd));
        rope = b.getF64FloatAttr(theta);
      }
    }
    bool bias = biasArg(args);
    note("rope", rope ? formatDouble(rope.getValueAsDouble()) : "none");
    note("attention_bias", bias ? "true" : "false");
    note("attention_heads", std::to_string(h) + "/" + std::to_string(kv) + "/" +
                                std::to_string(hd));
    std::string p = prefix(args, "attn");
    int64_t qWidth, kvWidth;
    if (__builtin_mul_overflow(h, hd, &qWidth) || __builtin_mul_overflow(kv, hd, &kvWidth))
      fail(at, "attention width overflows");
    Value q = linear(x, p + ".wq", qWidth, bias, at, initStd);
    Value k = linear(x, p + ".wk", kvWidth, bias, at, initStd);
    Value v = linear(x, p + ".wv", kvWidth, bias, at, initStd);
    // A decode program's attention keeps the keys and values of the context.
    Value o = graph::AttentionOp::create(
        b, loc(at), q.getType(), q, k, v, b.getI64IntegerAttr(h), b.getI64IntegerAttr(kv), rope,
        options.decode ? func.getArgument(1) : Value(),
        options.decode ? b.getI64IntegerAttr(context) : IntegerAttr());
    return linear(o, p + ".wo", dModel, bias, at, residualStd());
  }

  Value mlp(const CallArgs &args) {
    args.expectSignature(1, {"hidden", "act", "bias", "name"});
    Value x = activation(args);
    Loc at = args.call.loc;
    const Val *hv = args.keyword("hidden");
    int64_t hidden = hv ? positiveInt(*hv, "hidden") : 4 * dModel;
    size_t act = choiceArg(args, "act", {"gelu", "swiglu"}, 0);
    bool bias = biasArg(args);
    note("act", act == 0 ? "gelu" : "swiglu");
    note("mlp_bias", bias ? "true" : "false");
    note("mlp_hidden", std::to_string(hidden));
    std::string p = prefix(args, "mlp");
    Value h;
    if (act == 0) {
      Value up = linear(x, p + ".w_up", hidden, bias, at, initStd);
      h = graph::GeluOp::create(b, loc(at), up);
    } else {
      Value gate = linear(x, p + ".w_gate", hidden, bias, at, initStd);
      Value up = linear(x, p + ".w_up", hidden, bias, at, initStd);
      h = graph::SwigluOp::create(b, loc(at), gate, up);
    }
    return linear(h, p + ".w_down", dModel, bias, at, residualStd());
  }

  Value moe(const CallArgs &args) {
    args.expectSignature(1, {"experts", "top_k", "hidden", "capacity", "aux_loss",
                             "z_loss", "act", "name"});
    Value x = activation(args);
    Loc at = args.call.loc;
    const Val *ev = args.keyword("experts");
    if (!ev)
      fail(at, "moe needs 'experts = N'");
    int64_t experts = positiveInt(*ev, "experts");
    int64_t topK = intArg(args, "top_k", std::min<int64_t>(2, experts));
    if (topK > experts)
      fail(args.keyword("top_k")->loc, "top_k (" + std::to_string(topK) +
                                           ") must not exceed experts (" +
                                           std::to_string(experts) + ")");
    const Val *hv = args.keyword("hidden");
    int64_t hidden = hv ? positiveInt(*hv, "hidden") : 4 * dModel;
    // capacity = F (a factor), or none: dropless.
    const Val *cv = args.keyword("capacity");
    bool dropless = cv && cv->kind == Val::Kind::Choice && cv->s == "none";
    double capacity = !cv || dropless ? 1.25 : positiveFloat(*cv, "capacity");
    const Val *av = args.keyword("aux_loss");
    double aux = av ? nonNegativeFloat(*av, "aux_loss") : 0.01;
    const Val *zv = args.keyword("z_loss");
    double z = zv ? nonNegativeFloat(*zv, "z_loss") : 0.0;
    size_t act = choiceArg(args, "act", {"gelu", "swiglu"}, 0);
    std::string p = prefix(args, "moe");
    Value router = normalParam(p + ".router.weight", {experts, dModel}, at, initStd);
    Value wIn = normalParam(p + ".w_up.weight", {experts, hidden, dModel}, at, initStd);
    Value wGate;
    if (act == 1)
      wGate = normalParam(p + ".w_gate.weight", {experts, hidden, dModel}, at, initStd);
    Value wOut = normalParam(p + ".w_down.weight", {experts, dModel, hidden}, at, residualStd());
    // The expert weights (the last 2 or 3 parameters): a token uses top_k of them.
    for (size_t k = summary->params.size() - (act == 1 ? 3 : 2); k < summary->params.size(); ++k) {
      summary->params[k].experts = experts;
      summary->params[k].topK = topK;
    }
    auto op = graph::MoEOp::create(
        b, loc(at), x.getType(), RankedTensorType::get({}, b.getF32Type()), x,
        router, wIn, wOut, wGate, b.getI64IntegerAttr(experts),
        b.getI64IntegerAttr(topK), dropless ? FloatAttr() : b.getF64FloatAttr(capacity),
        b.getF64FloatAttr(aux), b.getF64FloatAttr(z),
        graph::ActivationAttr::get(&ctx, act == 0 ? graph::Activation::gelu
                                                  : graph::Activation::swiglu));
    auxLosses.push_back(op.getAuxLoss());
    ++moeLayers;
    summary->architecture["moe_layers"] = std::to_string(moeLayers);
    note("moe", std::to_string(experts) + " experts, top " + std::to_string(topK));
    return op.getResult();
  }

  Value head(const CallArgs &args) {
    args.expectSignature(1, {"tied", "bias", "name"});
    Value x = activation(args);
    Loc at = args.call.loc;
    const Val *tv = args.keyword("tied");
    bool tied = tv ? boolean(*tv, "tied") : true;
    bool bias = args.keyword("bias") ? boolean(*args.keyword("bias"), "bias") : false;
    if (tied && bias)
      fail(args.keyword("bias")->loc, "a tied head has no bias");
    if (tied && args.keyword("name"))
      fail(args.keyword("name")->loc, "a tied head has no parameters to name");
    note("head", tied ? "tied" : bias ? "untied_bias" : "untied");
    if (!tied) {
      std::string p = args.keyword("name") ? prefix(args, "head") : "lm_head";
      return linear(x, p, paddedVocab, bias, at, initStd);
    }
    if (!tokenTable)
      fail(at, "a tied head needs 'embedding(tokens)' before it");
    return graph::LinearOp::create(b, loc(at), f32({batch, seq, paddedVocab}, at), x,
                                   tokenTable, Value());
  }

  Value crossEntropy(const CallArgs &args) {
    args.expectSignature(2, {});
    Value logits = args.tensorAt(0, "the logits").t;
    Value targets = args.tensorAt(1, "the targets").t;
    if (targets != func.getArgument(1))
      fail(args.positional[1].loc, "cross_entropy takes 'targets' as its second argument");
    // A decode program outputs the logits (its second input is the position).
    auto lt = cast<RankedTensorType>(logits.getType());
    if (lt.getRank() != 3 || lt.getShape().back() != paddedVocab)
      fail(args.positional[0].loc, "cross_entropy expects logits of shape [" +
                                       std::to_string(batch) + ", " + std::to_string(seq) +
                                       ", " + std::to_string(paddedVocab) + "], got " +
                                       typeStr(logits));
    if (options.decode)
      return decodeLogits = logits;
    // Padding columns are not classes: the loss ignores them.
    return graph::CrossEntropyOp::create(
        b, loc(args.call.loc), logits, targets,
        paddedVocab != vocab ? b.getI64IntegerAttr(vocab) : IntegerAttr());
  }

  Location loc(Loc l) {
    return FileLineColLoc::get(&ctx, file, l.line, l.col);
  }

  MLIRContext &ctx;
  OpBuilder b;
  std::string file;
  BuildOptions options;
  ModelSummary *summary = nullptr;
  ModuleOp moduleOp;
  func::FuncOp func;
  Loc modelLoc;
  Loc graphLoc; // the first use of the graph (tokens or a graph builtin)

  std::map<std::string, Binding> env;
  std::set<std::string> readNames;                // names an expression or lookup read
  std::vector<std::string> hyperparameterOrder; // non-tensor assignments, in order
  std::set<std::string> paramNames;
  std::map<std::string, int> roleCounts;
  std::vector<Value> auxLosses;
  Value tokenTable;
  Value decodeLogits; // a decode program's output (BuildOptions::decode)
  int64_t layer = -1;
  int64_t moeLayers = 0;
  bool blockDone = false;

  // Resolved model-wide hyperparameters (valid once `func` exists).
  int64_t vocab = 0, context = 0, dModel = 0, layers = 0, heads = 0, kvHeads = 0;
  int64_t paddedVocab = 0; // rows of the token table and head: vocab, or padded_vocab
  int64_t headDim = 0, batch = 0, seq = 0;
  double eps = 1e-5, initStd = 0.02;
  bool useBias = false;
};

} // namespace

std::optional<Error> buildModel(MLIRContext &ctx, const std::string &file,
                                const Spec &spec, const BuildOptions &options,
                                OwningOpRef<ModuleOp> &module,
                                ModelSummary &summary) {
  ctx.loadDialect<graph::GraphDialect, dist::DistDialect, func::FuncDialect>();
  try {
    Builder(ctx, file, options).build(spec, module, summary);
  } catch (const BuildError &e) {
    module = nullptr;
    return e.error;
  }
  return std::nullopt;
}

} // namespace heiretsu::frontend
