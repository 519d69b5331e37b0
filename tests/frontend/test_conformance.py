"""A fast subset of ONNX's backend node tests against the checked-in expected outcomes.

`scripts/conformance.py --check-expected tests/conformance_expected.json` runs the whole suite
(about two minutes on 2 cores); this runs a slice of it on every test run.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUBSET = ("^test_(abs|relu|conv_with_strides_padding|gemm_default_no_bias|matmul_2d|softmax_example|if|"
          "layer_normalization_2d_axis0|isinf_negative|mod_float_mixed_sign_example|top_k|cosh|cumsum_1d|"
          "reduce_sum_empty_set|lstm_defaults|training_dropout|training_dropout_zero_ratio|batchnorm_example_training_mode|attention_3d|tensorscatter_circular|col2im_5d|tfidfvectorizer_tf_batch_uniandbigrams_skip5|split_zero_size_splits_opset18|maxpool_with_argmax_2d_precomputed_pads|deform_conv_with_mask_bias|attention_4d_causal_fp16_expanded|attention_4d_causal_nonpad_batch_prefill|"
          "sce_mean_weight_ii_4d_log_prob|nllloss_NCd1d2d3_sum_weight_high_ii|celu|center_crop_pad_crop_and_pad|"
          "cumprod_1d_exclusive|hannwindow|rms_normalization_2d_axis0|l1normalization_axis_0|string_concat|shape_example|"
          "unique_sorted_without_axis|nonmaxsuppression_suppress_by_IOU_and_scores|castlike_FLOAT_to_FLOAT8E4M3FN_expanded|"
          "swiglu|scan9_sum|reduce_max_empty_set|qlinearmatmul_2D_uint8_float16|convtranspose_output_shape|"
          "spacetodepth_crd_mode_example|pow_types_int32_float32|eyelike_with_dtype|cast_e8m0_FLOAT8E8M0_to_FLOAT)$")


def test_node_test_subset_matches_the_expected_outcomes(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "conformance.py"), "--filter", SUBSET, "--jobs", "2",
                        "--quiet", "--work", str(tmp_path), "--check-expected",
                        str(ROOT / "tests" / "conformance_expected.json")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "outcomes as expected" in r.stdout
    n = int(r.stdout.split("all ")[1].split(" outcomes")[0])
    assert n >= 15  # the subset really ran
