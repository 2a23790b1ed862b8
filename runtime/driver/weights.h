// `heiretsu export` and `heiretsu import`: a model's weights out to, and in from, the
// files other tools read (runtime/export: safetensors with Hugging Face's GPT-2 or
// Llama names and layouts, llm.c's GPT-2 model file).
//
//   heiretsu export SRC --format safetensors|llmc -o FILE [--seed S]
//   heiretsu export SRC --format safetensors|llmc --list
//   heiretsu import FILE --spec SPEC -o CKPT_DIR [--format safetensors|llmc] [--seed S]
//
// Contract:
// - export's SRC is a checkpoint (a step_NNNNNNNN directory, or a --save-dir root: its
//   newest complete checkpoint, each newer incomplete one named in a warning) or a
//   plan directory (the parameters as heiretsu-rank initializes them from --seed,
//   default 1337: the model a run starts from). A checkpoint's model card (its spec
//   text) is compiled again, for one rank, by heiretsu-compile in a temporary
//   directory, which gives the parameters and the architecture facts; a checkpoint
//   without a spec (format 2) is refused. The checkpoint is loaded with its checks
//   (manifest, sizes, checksums, finite values).
// - safetensors: FILE gets the tensors; config.json in FILE's directory gets the
//   Hugging Face config (so that directory loads with from_pretrained; it is
//   replaced). llmc: FILE alone. Both are written beside themselves and renamed in.
//   --list prints, instead of writing, each tensor's name, dtype and shape and the
//   totals (for llmc the header words first).
// - import reads FILE by --format, else by its content (llm.c's magic: llmc, else
//   safetensors), into the parameters of SPEC (compiled for one rank) and writes the
//   checkpoint CKPT_DIR/step_00000000: step 0, the values, zero AdamW moments, the
//   spec's model card, --seed (default 1337) as the run's seed, and global batch and
//   sequence 0: a step-0 checkpoint has no data position, so `heiretsu run PLAN
//   --resume CKPT_DIR` continues it on any layout and batch geometry of that spec.
//   safetensors: every tensor of the layout must be there (names with or without
//   "transformer." / "model."), with its shape; F16, BF16 and F64 are converted to
//   float32; buffers that are not parameters (GPT-2's attn.bias / attn.masked_bias
//   masks, Llama's rotary_emb.inv_freq) are skipped with a warning; any other
//   tensor is refused (the spec lacks something the file has); a tied spec takes
//   lm_head.weight only if it equals the embedding. A config.json in FILE's directory
//   must agree with the spec (runtime/export/layout.h, CheckHuggingFaceConfig).
// - export(import(F)) == F byte for byte for a file heiretsu wrote, and
//   import(export(C)) holds C's parameter values bit for bit (rows of padded_vocab past
//   the vocabulary excepted: zero).
// - Bad input (flags, a model that fits no layout of the format, a file that is not
//   what it should be: truncated, bad header, wrong shape, missing tensor) exits 2
//   with one message naming the file, the tensor or fact, and the expected and found
//   values; a failed write exits 1.
#ifndef HEIRETSU_RUNTIME_DRIVER_WEIGHTS_H_
#define HEIRETSU_RUNTIME_DRIVER_WEIGHTS_H_

#include <string>
#include <vector>

namespace heiretsu::driver {

extern const char kExportUsage[];
extern const char kImportUsage[];

// The commands on the words after `export` / `import`; `compiler` is the path of
// heiretsu-compile. Print what they did, or the error ("heiretsu: export: ..."), and
// return the exit code.
int ExportCommand(const std::vector<std::string>& args, const std::string& compiler);
int ImportCommand(const std::vector<std::string>& args, const std::string& compiler);

}  // namespace heiretsu::driver

#endif  // HEIRETSU_RUNTIME_DRIVER_WEIGHTS_H_
