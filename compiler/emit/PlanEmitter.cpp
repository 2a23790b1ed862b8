//===- PlanEmitter.cpp - plan.program -> FlatBuffers plan file ------------===//
//
// Uses the runtime's generated builder: the schema (runtime/plan/plan.fbs) is
// described once. Buffers are numbered in program order, each parameter's four
// buffers after the plain buffers; kernels become instructions with their absent
// optional buffers as kNoBuffer.
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

LogicalResult emitPlan(plan_ir::ProgramOp program, const EmitOptions &options,
                       std::vector<uint8_t> &bytes) {
  if (!program.getArenaBytes())
    return program.emitError("the program has no memory plan (run heiretsu-plan-memory)");
  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  DenseMap<Value, uint32_t> index;
  std::vector<flatbuffers::Offset<fb::Buffer>> buffers;
  std::vector<flatbuffers::Offset<fb::Param>> params;
  uint32_t tokens = 0, targets = 0, loss = 0;

  auto addBuffer = [&](Value v, const std::string &name, int64_t offset) {
    auto type = cast<MemRefType>(v.getType());
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    fb::DType dtype = type.getElementType().isInteger(32) ? fb::DType_I32 : fb::DType_F32;
    index[v] = static_cast<uint32_t>(buffers.size());
    buffers.push_back(fb::CreateBufferDirect(fbb, name.c_str(), static_cast<uint64_t>(offset),
                                             dtype, &shape));
    return index[v];
  };

  for (Operation &op : program.getBody().front()) {
    if (auto buf = dyn_cast<plan_ir::BufferOp>(op)) {
      uint32_t i = addBuffer(buf.getBuffer(), buf.getName().str(), *buf.getOffset());
      if (std::optional<StringRef> io = buf.getIo()) {
        if (*io == "tokens")
          tokens = i;
        else if (*io == "targets")
          targets = i;
        else
          loss = i;
      }
    } else if (auto p = dyn_cast<plan_ir::ParamOp>(op)) {
      ArrayRef<int64_t> offsets = *p.getOffsets();
      uint32_t ids[4];
      for (int k = 0; k < 4; ++k)
        ids[k] = addBuffer(p->getResult(k), bufferName(p->getResult(k)), offsets[k]);
      auto type = cast<MemRefType>(p.getValue().getType());
      // The logical shape: a tp block's global_shape, else the value's.
      ArrayRef<int64_t> logical = p.getGlobalShape().value_or(type.getShape());
      std::vector<int64_t> shape(logical.begin(), logical.end());
      double std = p.getStd() ? p.getStd()->convertToDouble() : 0.0;
      int64_t moments = numElements(p.getExpAvg());
      int64_t shard = moments == numElements(p.getValue()) && p.getExpAvg().getType() == type
                          ? 0
                          : moments;
      params.push_back(fb::CreateParamDirect(fbb, p.getName().str().c_str(), &shape,
                                             static_cast<fb::Init>(p.getInit()), std,
                                             p.getDecay(), ids[0], ids[1], ids[2], ids[3], shard,
                                             p.getTpDim() ? static_cast<int32_t>(*p.getTpDim())
                                                          : -1));
    }
  }

  auto stream = [&](Region &region) {
    std::vector<flatbuffers::Offset<fb::Instr>> instrs;
    for (Operation &op : region.front()) {
      auto k = cast<plan_ir::KernelOp>(op);
      std::vector<uint32_t> bufs;
      ArrayRef<int64_t> absent = k.getAbsent();
      auto it = k.getBuffers().begin();
      size_t slots = k.getBuffers().size() + absent.size();
      for (size_t s = 0; s < slots; ++s)
        bufs.push_back(llvm::is_contained(absent, static_cast<int64_t>(s)) ? plan::kNoBuffer
                                                                           : index[*it++]);
      std::vector<int64_t> ints(k.getInts().begin(), k.getInts().end());
      std::vector<double> floats(k.getFloats().begin(), k.getFloats().end());
      instrs.push_back(fb::CreateInstrDirect(fbb, *plan::OpFromName(k.getName().str()), &bufs, &ints, &floats));
    }
    return instrs;
  };
  std::vector<flatbuffers::Offset<fb::Instr>> micro, update;
  for (Operation &op : program.getBody().front()) {
    if (auto m = dyn_cast<plan_ir::MicrobatchOp>(op))
      micro = stream(m.getBody());
    if (auto u = dyn_cast<plan_ir::UpdateOp>(op))
      update = stream(u.getBody());
  }

  fb::Mesh mesh(options.mesh[0], options.mesh[1], options.mesh[2], options.mesh[3]);
  auto optimizer = fb::CreateOptimizer(fbb, options.beta1, options.beta2, options.eps);
  auto root = fb::CreatePlanDirect(
      fbb, plan::kPlanVersion, program.getModel().str().c_str(), &mesh, options.program,
      program.getMicroBatchSize(), program.getMicrobatches(), program.getSeq(),
      program.getVocab(), static_cast<uint64_t>(*program.getArenaBytes()),
      static_cast<uint64_t>(program.getParamBytes().value_or(0)),
      static_cast<uint64_t>(program.getActivationBytes().value_or(0)), &buffers, &params,
      tokens, targets, loss, &micro, &update, optimizer);
  fb::FinishSizePrefixedPlanBuffer(fbb, root);
  bytes.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  plan::SealPlan(&bytes); // the checksum trailer (runtime/plan/plan.h)
  // The emitter must produce what the runtime accepts: verify with its verifier.
  if (auto err = plan::VerifyPlan("<emitted plan>", bytes))
    return program.emitError("internal error: emitted plan does not verify: ") << *err;
  return success();
}

std::optional<std::string> writePlanFile(const std::string &dir, int32_t program,
                                         const std::vector<uint8_t> &bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return "cannot create plan directory '" + dir + "': " + ec.message();
  std::string path = dir + "/" + plan::ProgramFileName(program);
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
