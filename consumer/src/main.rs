//! `warren-consumer`: the stock worker, every built-in kind registered.

#[global_allocator]
static GLOBAL: warren_infra::alloc::Switchable = warren_infra::alloc::Switchable;

fn main() -> std::process::ExitCode {
    warren_consumer::builtin::worker().allocator(warren_infra::alloc::configure).main()
}
