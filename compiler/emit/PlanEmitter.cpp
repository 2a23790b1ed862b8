//===- PlanEmitter.cpp - plan.program -> FlatBuffers plan file ------------===//
//
// Uses the runtime's generated builder: the schema (runtime/plan/plan.fbs) is
// described once. Buffers are numbered in program order (a parameter's four
// buffers where the parameter is); units keep program order and the schedule
// names them by index; each kernel becomes an instruction through its opcode's
// typed operands (plan::op), an absent optional buffer as kNoBuffer; inputs and
// outputs a program does not have are kNoBuffer too.
//
//===----------------------------------------------------------------------===//

#include "compiler/emit/PlanEmitter.h"
#include "compiler/transforms/PlanUtils.h"

#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace mlir;
namespace fb = heiretsu::plan::fb;

namespace heiretsu {

namespace {

/// Collects an instruction's operands from a kernel's typed struct (op::X::Write):
/// buffers as plan buffer indices, an absent one as kNoBuffer.
struct InstrSink {
  const DenseMap<Value, uint32_t> &index;
  std::vector<uint32_t> buffers;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  void Buffer(const Value &v) { buffers.push_back(v ? index.lookup(v) : plan::kNoBuffer); }
  void Int(int64_t v) { ints.push_back(v); }
  void Float(double v) { floats.push_back(v); }
};

} // namespace

LogicalResult emitPlan(plan_ir::ProgramOp program, const EmitOptions &options,
                       std::vector<uint8_t> &bytes) {
  if (!program.getArenaBytes())
    return program.emitError("the program has no memory plan (run heiretsu-plan-memory)");
  dist::MeshOp meshOp = requireMesh(program, "the plan emitter");
  if (!meshOp)
    return failure();
  auto schedules = program.getBody().front().getOps<plan_ir::ScheduleOp>();
  if (schedules.empty())
    return program.emitError("the program has no plan.schedule (run heiretsu-schedule)");
  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  DenseMap<Value, uint32_t> index;
  std::vector<flatbuffers::Offset<fb::Buffer>> buffers;
  std::vector<flatbuffers::Offset<fb::Param>> params;
  uint32_t tokens = plan::kNoBuffer, targets = plan::kNoBuffer, loss = plan::kNoBuffer;
  uint32_t position = plan::kNoBuffer, logits = plan::kNoBuffer;

  auto addBuffer = [&](Value v, const std::string &name, int64_t offset, bool slotted = false) {
    auto type = cast<MemRefType>(v.getType());
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    mlir::Type element = type.getElementType();
    fb::DType dtype = element.isInteger(32) ? fb::DType_I32
                      : element.isBF16()    ? fb::DType_BF16
                      : element.isF16()     ? fb::DType_F16
                                            : fb::DType_F32;
    index[v] = static_cast<uint32_t>(buffers.size());
    buffers.push_back(fb::CreateBufferDirect(fbb, name.c_str(), static_cast<uint64_t>(offset),
                                             dtype, &shape, slotted));
    return index[v];
  };

  for (Operation &op : program.getBody().front()) {
    if (auto buf = dyn_cast<plan_ir::BufferOp>(op)) {
      uint32_t i = addBuffer(buf.getBuffer(), buf.getName().str(), *buf.getOffset(),
                             buf.getSlotted());
      if (std::optional<StringRef> io = buf.getIo()) {
        if (*io == "tokens")
          tokens = i;
        else if (*io == "targets")
          targets = i;
        else if (*io == "position")
          position = i;
        else if (*io == "logits")
          logits = i;
        else if (*io == "loss")
          loss = i;
        // "cache": a decode program's KV cache, named by its buffers (no plan field)
      }
    } else if (auto p = dyn_cast<plan_ir::ParamOp>(op)) {
      ArrayRef<int64_t> offsets = *p.getOffsets();
      uint32_t ids[4];
      for (int k = 0; k < 4; ++k)
        ids[k] = addBuffer(p->getResult(k), bufferName(p->getResult(k)), offsets[k]);
      auto type = cast<MemRefType>(p.getValue().getType());
      // The logical shape: a split parameter's global_shape, else the value's.
      ArrayRef<int64_t> logical = p.getGlobalShape().value_or(type.getShape());
      std::vector<int64_t> shape(logical.begin(), logical.end());
      std::vector<fb::Split> splits;
      if (std::optional<ArrayRef<int64_t>> axes = p.getSplitAxes())
        for (auto [dim, axis] : llvm::enumerate(*axes))
          if (axis >= 0)
            splits.emplace_back(static_cast<int32_t>(dim), static_cast<int32_t>(axis));
      double std = p.getStd() ? p.getStd()->convertToDouble() : 0.0;
      int64_t moments = numElements(p.getExpAvg());
      int64_t shard = moments == numElements(p.getValue()) && p.getExpAvg().getType() == type
                          ? 0
                          : moments;
      int32_t shardAxis =
          shard ? static_cast<int32_t>(zeroShardAxis(p, meshOp.getEp())) : plan::kAxisDp;
      params.push_back(fb::CreateParamDirect(fbb, p.getName().str().c_str(), &shape,
                                             static_cast<fb::Init>(p.getInit()), std,
                                             p.getDecay(), ids[0], ids[1], ids[2], ids[3], shard,
                                             &splits, shardAxis));
    }
  }

  // Units, in program order; each kernel through its opcode's typed operands.
  std::vector<flatbuffers::Offset<fb::Unit>> units;
  llvm::StringMap<uint32_t> unitIndex;
  for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>()) {
    std::vector<flatbuffers::Offset<fb::Instr>> instrs;
    for (auto k : unit.getBody().front().getOps<plan_ir::KernelOp>()) {
      std::optional<fb::Op> code = plan::OpFromName(k.getName().str());
      if (!code)
        return k.emitError("internal error: unknown opcode '") << k.getName() << "'";
      InstrSink sink{.index = index};
      plan::VisitOp<Value>(
          *code, [&](auto tag) { readKernel<decltype(tag)>(k).Write(sink); }, [] {});
      instrs.push_back(
          fb::CreateInstrDirect(fbb, *code, &sink.buffers, &sink.ints, &sink.floats));
    }
    unitIndex[unit.getName()] = static_cast<uint32_t>(units.size());
    units.push_back(fb::CreateUnitDirect(fbb, unit.getName().str().c_str(),
                                         static_cast<fb::UnitKind>(unit.getKind()), &instrs,
                                         static_cast<int32_t>(unit.chunkIndex())));
  }
  std::vector<fb::Run> schedule;
  for (auto run : (*schedules.begin()).getBody().front().getOps<plan_ir::RunOp>())
    schedule.emplace_back(unitIndex.lookup(run.getUnit()),
                          static_cast<int32_t>(run.getMicrobatch().value_or(-1)),
                          static_cast<int32_t>(run.getChunk().value_or(0)),
                          static_cast<int32_t>(run.getSlot().value_or(0)));

  fb::Mesh mesh(static_cast<int32_t>(meshOp.getDp()), static_cast<int32_t>(meshOp.getPp()),
                static_cast<int32_t>(meshOp.getTp()), static_cast<int32_t>(meshOp.getEp()));
  auto optimizer = fb::CreateOptimizer(fbb, options.beta1, options.beta2, options.eps);
  std::vector<std::pair<std::string, std::string>> facts = options.config;
  llvm::sort(facts);
  std::vector<flatbuffers::Offset<fb::KeyValue>> config;
  for (const auto &[key, value] : facts)
    config.push_back(fb::CreateKeyValueDirect(fbb, key.c_str(), value.c_str()));
  auto root = fb::CreatePlanDirect(
      fbb, plan::kPlanVersion, program.getModel().str().c_str(), &mesh,
      static_cast<int32_t>(program.getStage()), static_cast<int32_t>(meshOp.getPp()),
      program.getMicroBatchSize(), program.getMicrobatches(), program.getSeq(),
      program.getVocab(), static_cast<uint64_t>(*program.getArenaBytes()),
      static_cast<uint64_t>(program.getParamBytes().value_or(0)),
      static_cast<uint64_t>(program.getActivationBytes().value_or(0)), &buffers, &params,
      tokens, targets, loss, &units, &schedule, optimizer,
      static_cast<uint32_t>(program.getSlots().value_or(1)),
      static_cast<uint64_t>(program.getSlotBytes().value_or(0)), options.spec.c_str(),
      options.specFile.c_str(), options.tokenizer.c_str(), &config, position, logits,
      static_cast<uint64_t>(program.getActivationBytesF32().value_or(0)));
  fb::FinishSizePrefixedPlanBuffer(fbb, root);
  bytes.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  plan::SealPlan(&bytes); // the checksum trailer (runtime/plan/plan.h)
  // The emitter must produce what the runtime accepts: verify with its verifier.
  if (auto err = plan::VerifyPlan("<emitted plan>", bytes))
    return program.emitError("internal error: emitted plan does not verify: ") << err->message;
  return success();
}

std::optional<std::string> writePlanFile(const std::string &dir, const std::string &file,
                                         const std::vector<uint8_t> &bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return "cannot create plan directory '" + dir + "': " + ec.message();
  std::string path = dir + "/" + file;
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char *>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out)
      return "cannot write '" + tmp + "': " + std::strerror(errno);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return "cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno);
  return std::nullopt;
}

} // namespace heiretsu
