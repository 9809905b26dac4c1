// Tests for bench/report.h: nearest-rank percentiles on known data, the JSON keys scripts rely
// on, the CSV header, the table and the gnuplot script (and the PNG when gnuplot is installed).
#include "bench/report.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cellserve::bench {
namespace {

std::vector<double> Range(int from, int to) {
  std::vector<double> v;
  for (int i = from; i <= to; ++i) v.push_back(i);
  return v;
}

TEST(PercentileTest, NearestRankOnKnownData) {
  const auto ten = Range(1, 10);
  EXPECT_EQ(NearestRank(ten, 50), 5);
  EXPECT_EQ(NearestRank(ten, 90), 9);
  EXPECT_EQ(NearestRank(ten, 99), 10);
  EXPECT_EQ(NearestRank(ten, 100), 10);
  EXPECT_EQ(NearestRank(ten, 1), 1);
  const auto hundred = Range(1, 100);
  EXPECT_EQ(NearestRank(hundred, 50), 50);
  EXPECT_EQ(NearestRank(hundred, 90), 90);
  EXPECT_EQ(NearestRank(hundred, 99), 99);
  const auto thousand = Range(1, 1000);
  EXPECT_EQ(NearestRank(thousand, 99), 990);
  EXPECT_EQ(NearestRank(thousand, 99.9), 999);
  EXPECT_EQ(NearestRank({7.5}, 50), 7.5);
  EXPECT_EQ(NearestRank({7.5}, 99), 7.5);
  EXPECT_EQ(NearestRank({}, 50), 0);
  // 3 values: p50 is the 2nd (ceil 1.5), p99 the 3rd.
  EXPECT_EQ(NearestRank({1, 2, 3}, 50), 2);
  EXPECT_EQ(NearestRank({1, 2, 3}, 99), 3);
}

TEST(PercentileTest, MedianTakesTheMiddleOrTheMeanOfTheMiddleTwo) {
  EXPECT_EQ(Median({}), 0);
  EXPECT_EQ(Median({4}), 4);
  EXPECT_EQ(Median({9, 1, 5}), 5);          // any order
  EXPECT_EQ(Median({10, 1, 3, 2}), 2.5);    // even: the mean of 2 and 3, not a side
  EXPECT_EQ(Median({1, 1, 100, 100}), 50.5);
}

TEST(PercentileTest, StatsAnyOrderAndEmpty) {
  std::vector<double> v = Range(1, 100);
  std::reverse(v.begin(), v.end());
  std::swap(v[3], v[70]);
  LatencyStats s = ComputeLatencyStats(v);
  EXPECT_EQ(s.count, 100);
  EXPECT_EQ(s.p50_ms, 50);
  EXPECT_EQ(s.p90_ms, 90);
  EXPECT_EQ(s.p99_ms, 99);
  EXPECT_EQ(s.max_ms, 100);
  EXPECT_DOUBLE_EQ(s.mean_ms, 50.5);

  LatencyStats e = ComputeLatencyStats({});
  EXPECT_EQ(e.count, 0);
  EXPECT_EQ(e.p50_ms, 0);
  EXPECT_EQ(e.p99_ms, 0);
  EXPECT_EQ(e.max_ms, 0);
  EXPECT_EQ(e.mean_ms, 0);

  Row r;
  r.SetLatency(s);
  EXPECT_EQ(r.p90_ms, 90);
  EXPECT_EQ(r.max_ms, 100);
}

std::vector<Row> SampleRows() {
  std::vector<Row> rows;
  const char* policies[] = {"cellular", "padded"};
  for (int p = 0; p < 2; ++p) {
    for (int i = 1; i <= 3; ++i) {
      Row r;
      r.policy = policies[p];
      r.model = "sentiment";
      r.offered_rps = 100.0 * i;
      r.throughput_rps = 100.0 * i * (p ? 0.8 : 1.0);
      r.completed = 300 * i;
      r.rejected = p;
      r.p50_ms = 2.0 * i * (p + 1);
      r.p90_ms = 3.0 * i * (p + 1);
      r.p99_ms = 5.0 * i * (p + 1);
      r.max_ms = 9.0 * i * (p + 1);
      r.device_busy = 0.1 * i;
      r.sent = r.completed + r.rejected;
      if (i == 2) r.saturation_rps = 321.0;
      rows.push_back(r);
    }
  }
  return rows;
}

TEST(ReportTest, JsonIsAListWithTheInterfaceKeys) {
  const auto rows = SampleRows();
  auto j = nlohmann::json::parse(RowsToJson(rows));
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), rows.size());
  for (const char* key : {"policy", "model", "offered_rps", "throughput_rps", "completed", "rejected",
                          "p50_ms", "p90_ms", "p99_ms", "max_ms", "failed", "device_busy"}) {
    for (const auto& row : j) EXPECT_TRUE(row.contains(key)) << key;
  }
  EXPECT_EQ(j[0]["policy"], "cellular");
  EXPECT_EQ(j[3]["policy"], "padded");
  EXPECT_EQ(j[0]["model"], "sentiment");
  EXPECT_DOUBLE_EQ(j[1]["offered_rps"].get<double>(), 200.0);
  EXPECT_EQ(j[4]["completed"].get<int64_t>(), 600);
  EXPECT_EQ(j[4]["rejected"].get<int64_t>(), 1);
  EXPECT_DOUBLE_EQ(j[5]["p99_ms"].get<double>(), 30.0);
  EXPECT_TRUE(j[0]["saturation_rps"].is_null());
  EXPECT_DOUBLE_EQ(j[1]["saturation_rps"].get<double>(), 321.0);
  EXPECT_TRUE(nlohmann::json::parse(RowsToJson({})).is_array());
}

TEST(ReportTest, CsvHeaderAndLines) {
  const std::string header = CsvHeader();
  EXPECT_EQ(header.rfind("policy,model,offered_rps,throughput_rps,completed,rejected,failed,"
                         "p50_ms,p90_ms,p99_ms,max_ms,device_busy", 0),
            0u)
      << header;
  auto rows = SampleRows();
  rows[0].model = "a,\"b\"";
  const std::string csv = RowsToCsv(rows);
  std::istringstream in(csv);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), rows.size() + 1);
  EXPECT_EQ(lines[0], header);
  EXPECT_EQ(lines[1].rfind("cellular,\"a,\"\"b\"\"\",100.000,100.000,300,0,0,", 0), 0u) << lines[1];
  // Every line has as many fields as the header (no quoting in the other rows).
  const auto count = [](const std::string& s) { return std::count(s.begin(), s.end(), ','); };
  for (size_t i = 2; i < lines.size(); ++i) EXPECT_EQ(count(lines[i]), count(header)) << lines[i];
}

TEST(ReportTest, WritesFiles) {
  const std::string dir = ::testing::TempDir();
  const auto rows = SampleRows();
  ASSERT_TRUE(WriteJson(dir + "/bench_report_test.json", rows).ok());
  ASSERT_TRUE(WriteCsv(dir + "/bench_report_test.csv", rows).ok());
  std::ifstream j(dir + "/bench_report_test.json");
  std::string text((std::istreambuf_iterator<char>(j)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, RowsToJson(rows));
  EXPECT_FALSE(WriteJson(dir + "/no/such/dir/x.json", rows).ok());
  std::remove((dir + "/bench_report_test.json").c_str());
  std::remove((dir + "/bench_report_test.csv").c_str());
}

TEST(ReportTest, TableHasEveryRun) {
  const std::string table = FormatTable(SampleRows());
  EXPECT_NE(table.find("policy"), std::string::npos);
  EXPECT_NE(table.find("p99 ms"), std::string::npos);
  std::istringstream in(table);
  int cellular = 0, padded = 0;
  for (std::string l; std::getline(in, l);) {
    cellular += l.rfind("cellular", 0) == 0;
    padded += l.rfind("padded", 0) == 0;
  }
  EXPECT_EQ(cellular, 3);
  EXPECT_EQ(padded, 3);
}

TEST(ReportTest, PlotScriptHasOneLinePerPolicyOnALogScale) {
  auto rows = SampleRows();
  rows.push_back(rows[0]);
  rows.back().policy = "sequential";
  rows.back().completed = 0;  // nothing to draw: left out
  const std::string gp = PlotScript(rows, "/tmp/x y/plot.png", "lstm \"quoted\"");
  EXPECT_NE(gp.find("set logscale y"), std::string::npos);
  EXPECT_NE(gp.find("set output '/tmp/x y/plot.png'"), std::string::npos);
  EXPECT_NE(gp.find("title \"cellular\""), std::string::npos);
  EXPECT_NE(gp.find("title \"padded\""), std::string::npos);
  EXPECT_EQ(gp.find("sequential"), std::string::npos);
  EXPECT_NE(gp.find("p99 latency (ms)"), std::string::npos);
  EXPECT_NE(gp.find("p50 latency (ms)"), std::string::npos);
  EXPECT_NE(gp.find("lstm \\\"quoted\\\""), std::string::npos);
}

TEST(ReportTest, WritePlotMakesAPngOrSaysGnuplotIsMissing) {
  const std::string png = ::testing::TempDir() + "/bench_report_test_plot.png";
  const std::string gp = ::testing::TempDir() + "/bench_report_test_plot.gp";
  std::remove(png.c_str());
  std::vector<Row> nothing = SampleRows();  // checked before gnuplot is looked for: runs everywhere
  for (auto& r : nothing) r.completed = 0;
  EXPECT_EQ(WritePlot(nothing, png, "x").code(), StatusCode::kInvalidArgument);
  Status s = WritePlot(SampleRows(), png, "test");
  std::ifstream script(gp);
  EXPECT_TRUE(script.good()) << "the script is written in every case";
  if (s.code() == StatusCode::kUnavailable) {
    EXPECT_NE(s.message().find("gnuplot"), std::string::npos);
    GTEST_SKIP() << s.ToString();
  }
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::ifstream in(png, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  std::remove(png.c_str());
  std::remove(gp.c_str());
}

}  // namespace
}  // namespace cellserve::bench
