//! Test cases shared by the host and the emulated Cortex-M4F (one source, two harnesses).
//!
//! Everything under `core/tests/cases/` must compile without std and without alloc: it is
//! included as-is by `core/tests/cases_host.rs` (host, libtest) and by `target-tests/src/lib.rs`
//! (thumbv7em-none-eabihf on QEMU mps2-an386, embedded-test, one QEMU boot per case).
//! Use `assert!`/`assert_eq!`/`panic!` only; no `std`, `alloc`, `Vec`, proptest or `#[should_panic]`.
//!
//! # Adding a case
//! 1. Write `pub fn my_case() { ... }` (no arguments, returns `()`) in a module here, e.g.
//!    `round.rs`. Use `fedrecon_core::...`, `libm`, `core::hint::black_box` as needed.
//! 2. Add its name to that module's list in [`for_each_case!`] below.
//! 3. For a new module: add `pub mod round;` below and a `round: [ ... ],` entry to the list.
//!
//! `cargo test -p fedrecon-core` then runs it on the host as `round::my_case`, and
//! `cargo test-target` runs it on the target under the same name. A case missing from the list
//! is never called and fails `cargo clippy --all-targets -- -D warnings` as dead code; a name
//! in the list without a function fails to compile.
//!
//! Keep cases small (the target has 4 MB RAM, and a case's stack is the whole stack): use
//! fixed-size arrays or `heapless`, and compare floats bit for bit with [`assert_f32_bits`]
//! where host and target must agree exactly.

pub mod errors;
pub mod exact;
pub mod fixed;
pub mod round;
pub mod smoke;
pub mod split;

/// The single list of cases, by module. Both harnesses expand it with their own wrapper
/// macro: `for_each_case!(wrapper)` calls `wrapper! { module: [case, ...], ... }`.
macro_rules! for_each_case {
    ($wrapper:ident) => {
        $wrapper! {
            errors: [
                dataset_rejects_bad_examples,
                invalid_config_is_rejected,
                item_out_of_range_for_rows,
                missing_row_is_reported,
                empty_split_is_reported,
                top_k_bounds,
                display_names_the_problem,
                trained_rows_capacity_is_enforced,
            ],
            exact: [
                hand_worked_exact_k2,
                hand_worked_exact_k2_q16,
                hand_worked_exact_k2_q12,
                hand_worked_exact_bias,
                hand_worked_exact_bias_q16,
                hand_worked_exact_bias_q12,
                rank_deficient_is_solved_by_the_regulariser,
                singular_system_is_refused,
                ldlt_solves_a_hand_worked_system,
                exact_reconstruct_for_ranking,
                q22_inner_products_round_once,
                q16_out_of_range_is_refused,
                q16_exact_bits,
            ],
            fixed: [
                saturates_at_the_edges,
                rounds_to_nearest_ties_up,
                converts_from_f32,
                dot_k64_worst_case_is_exact,
                synthetic_loss_falls_in_fixed_point,
                q12_saturates_and_rounds,
                q12_dot_k64_worst_case,
                synthetic_loss_falls_in_q12,
            ],
            round: [
                hand_worked_k2_round,
                hand_worked_k2_round_q16,
                hand_worked_k2_round_q12,
                duplicate_item_in_batch_sums_gradients,
                duplicate_item_in_batch_q16,
                duplicate_item_in_batch_q12,
                hand_worked_biases,
                hand_worked_biases_q16,
                hand_worked_biases_q12,
                hand_worked_user_l2,
                uniform_weighting_is_one,
                non_finite_update_has_zero_weight,
                evaluate_uses_disjoint_halves,
                determinism_and_init_range,
                top_k_ranks_unrated_items,
                workspace_reuse_is_clean,
                f32_dot_order_is_fixed,
            ],
            smoke: [
                f32_repeated_add_bits,
                f32_dot_no_fma_bits,
                libm_bits,
            ],
            split: [
                odd_batch_count_and_short_last_batch,
                reuse_gives_both_phases_every_batch,
                epochs_then_cap_across_epochs,
                cap_before_seeded_shuffle,
                single_batch_leaves_post_empty,
            ],
        }
    };
}
pub(crate) use for_each_case;

/// Asserts that `actual` has exactly the bit pattern `expected_bits` (`f32::to_bits`).
///
/// Get the expected pattern by running the computation on the host and printing
/// `format!("{:#010x}", x.to_bits())`.
#[track_caller]
pub fn assert_f32_bits(actual: f32, expected_bits: u32) {
    assert!(
        actual.to_bits() == expected_bits,
        "f32 bits differ: got {actual:e} ({:#010x}), expected {:e} ({expected_bits:#010x})",
        actual.to_bits(),
        f32::from_bits(expected_bits),
    );
}
