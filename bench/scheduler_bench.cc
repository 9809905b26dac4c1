// Scheduling decision cost (Google Benchmark): how long Scheduler::NextRound takes to pick a cell
// type and form a batch, with N requests in flight (lstm, 1 layer, 30-token sentences, max batch
// 256, lookahead 5). The device is faked: rounds complete at once with zero outputs, and finished
// requests are replaced, so the population stays at N. Only NextRound is timed (manual time).
// Target (issue 3): under 10 microseconds per decision.
#include <benchmark/benchmark.h>

#include <chrono>
#include <deque>

#include "runtime/model_repository.h"
#include "runtime/scheduler.h"

namespace cellserve {
namespace {

void BM_NextRound(benchmark::State& state) {
  const int64_t population = state.range(0);
  ModelSpec spec;
  spec.name = "bench";
  spec.kind = ModelKind::kLstm;
  spec.vocab_size = 100;
  spec.embed_dim = spec.hidden = 8;  // the scheduler never looks at the weights
  spec.classes = 2;
  spec.max_batch = 256;
  auto model = Model::Create(spec, RandomWeights(spec, 1, 0.1f).value()).value();
  SteadyClock clock;
  SchedulerOptions options;
  options.state_slots = 1 << 20;
  auto scheduler = Scheduler::Create(model.get(), options, &clock).value();
  RequestInput input;
  for (int i = 0; i < 30; ++i) input.tokens.push_back(4 + i);
  RequestId next_id = 1;
  auto admit = [&] { (void)scheduler->Admit(next_id++, BuildRequestGraph(model, input).value()); };
  for (int64_t i = 0; i < population; ++i) admit();
  std::deque<Round> in_flight;
  int64_t rows = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto round = scheduler->NextRound();
    const auto end = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(end - start).count());
    if (round) {
      rows += static_cast<int64_t>(round->batch.rows.size());
      in_flight.push_back(std::move(*round));
    }
    if (!round || static_cast<int>(in_flight.size()) >= options.lookahead) {
      Round done = std::move(in_flight.front());
      in_flight.pop_front();
      BatchOutput out;
      out.argmax.assign(done.batch.rows.size(), 0);
      out.max_value.assign(done.batch.rows.size(), 0.0f);
      out.logits.assign(done.batch.rows.size() * 2, 0.0f);
      for (const auto& e : scheduler->OnRoundDone(done.id, out))
        if (e.kind != RequestEvent::Kind::kToken) admit();
    }
  }
  state.counters["mean_batch"] = benchmark::Counter(static_cast<double>(rows) / state.iterations());
}

BENCHMARK(BM_NextRound)->Arg(16)->Arg(256)->Arg(1024)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace cellserve

BENCHMARK_MAIN();
