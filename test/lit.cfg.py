# lit configuration for heiretsu: dialect round-trips and invalid IR, the spec
# frontend (accepted and rejected specs) and every example.
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "heiretsu"
# RUN lines use bash features (exit-status checks, process substitution).
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".mlir", ".hr", ".test"]
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.heiretsu_obj_root, "test")

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.heiretsu_tools_dir, append_path=True)

config.substitutions.append(("%examples", os.path.join(config.heiretsu_src_root, "examples")))
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "inputs")))
# `%expect_exit N cmd...` runs cmd and fails unless it exits with status N.
config.substitutions.append(
    ("%expect_exit", os.path.join(config.test_source_root, "expect_exit.sh")))
config.substitutions.append(
    ("%heiretsu_bin", os.path.join(config.heiretsu_tools_dir, "heiretsu")))
config.substitutions.append(("%heiretsu_dir", config.heiretsu_tools_dir))

# CUDA tests need the CUDA build (heiretsu-cuda-check); without a GPU they run and
# report "skipped: no GPU".
if os.path.exists(os.path.join(config.heiretsu_tools_dir, "heiretsu-cuda-check")):
    config.available_features.add("cuda")
