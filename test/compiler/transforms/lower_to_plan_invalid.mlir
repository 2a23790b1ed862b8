// RUN: heiretsu-opt %s --split-input-file --heiretsu-lower-to-plan --verify-diagnostics

// Tests that a module without the frontend's structure is refused.
// expected-error @+1 {{expected a graph.model module with func.func @forward(tokens, targets)}}
module {
  func.func @other() {
    return
  }
}
