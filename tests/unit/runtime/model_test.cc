#include "runtime/model.h"

#include <sys/fsuid.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/atomic_file.h"
#include "runtime/model_repository.h"
#include "runtime/safetensors.h"
#include "tests/unit/common/address_space.h"
#include "tests/unit/common/sanitizers.h"
#include "tests/unit/runtime/fake_backend.h"

namespace cellserve {
namespace {

namespace fs = std::filesystem;
using runtime_testing::SmallSpec;
using Shapes = std::map<std::string, std::vector<int64_t>>;

ModelSpec Spec(ModelKind kind, int64_t layers = 2) {
  ModelSpec s = SmallSpec(kind, layers, /*max_batch=*/7);
  s.vocab_size = 11;
  s.embed_dim = 6;
  s.hidden = 4;
  s.classes = kind == ModelKind::kSeq2Seq ? 0 : 3;
  s.target_vocab_size = kind == ModelKind::kSeq2Seq ? 13 : 0;
  return s;
}

SafetensorsFile Weights(const ModelSpec& spec, uint64_t seed = 5) {
  StatusOr<SafetensorsFile> w = RandomWeights(spec, seed, 0.25f);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return w.ok() ? *w : SafetensorsFile();
}

void ExpectInvalidNaming(const Status& s, const std::string& needle) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find(needle), std::string::npos)
      << "message '" << s.message() << "' lacks '" << needle << "'";
}

// ---- RequiredTensors ----

TEST(RequiredTensorsTest, Lstm) {
  // V=11, E=6, H=4, C=3, L=2.
  const Shapes want = {
      {"embedding", {11, 6}},   {"lstm.0.weight", {16, 10}}, {"lstm.0.bias", {16}},
      {"lstm.1.weight", {16, 8}}, {"lstm.1.bias", {16}},     {"head.weight", {3, 4}},
      {"head.bias", {3}},
  };
  EXPECT_EQ(Model::RequiredTensors(Spec(ModelKind::kLstm)), want);
}

TEST(RequiredTensorsTest, Seq2Seq) {
  // V=11, Vt=13, E=6, H=4, L=2.
  const Shapes want = {
      {"encoder.embedding", {11, 6}}, {"encoder.0.weight", {16, 10}}, {"encoder.0.bias", {16}},
      {"encoder.1.weight", {16, 8}},  {"encoder.1.bias", {16}},       {"decoder.embedding", {13, 6}},
      {"decoder.0.weight", {16, 10}}, {"decoder.0.bias", {16}},       {"decoder.1.weight", {16, 8}},
      {"decoder.1.bias", {16}},       {"proj.weight", {13, 4}},       {"proj.bias", {13}},
  };
  EXPECT_EQ(Model::RequiredTensors(Spec(ModelKind::kSeq2Seq)), want);
}

TEST(RequiredTensorsTest, TreeLstm) {
  const Shapes want = {
      {"embedding", {11, 6}},          {"tree.leaf.weight", {12, 6}}, {"tree.leaf.bias", {12}},
      {"tree.internal.weight", {20, 8}}, {"tree.internal.bias", {20}}, {"head.weight", {3, 4}},
      {"head.bias", {3}},
  };
  EXPECT_EQ(Model::RequiredTensors(Spec(ModelKind::kTreeLstm)), want);
  // layers does not matter for a tree model.
  EXPECT_EQ(Model::RequiredTensors(Spec(ModelKind::kTreeLstm, 5)), want);
}

TEST(RequiredTensorsTest, SingleLayerLstm) {
  Shapes t = Model::RequiredTensors(Spec(ModelKind::kLstm, 1));
  EXPECT_EQ(t.size(), 5u);
  EXPECT_EQ(t.count("lstm.1.weight"), 0u);
  EXPECT_EQ(t.at("lstm.0.weight"), (std::vector<int64_t>{16, 10}));
}

// ---- Model::Create ----

TEST(ModelCreateTest, LstmCellTypes) {
  const ModelSpec spec = Spec(ModelKind::kLstm, 3);
  StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, Weights(spec));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Model& m = **r;
  ASSERT_EQ(m.cell_types().size(), 4u);
  const std::vector<std::string> names = {"lstm.0", "lstm.1", "lstm.2", "head"};
  for (int l = 0; l < 3; ++l) {
    const CellType& t = m.cell_type(m.layer_type(l));
    EXPECT_EQ(t.name, names[l]);
    EXPECT_EQ(t.op, CellOp::kLstm);
    EXPECT_EQ(t.input_dim, l == 0 ? 6 : 4);
    EXPECT_EQ(t.hidden, 4);
    EXPECT_EQ(t.outputs, 16);
    EXPECT_EQ(t.max_batch, 7);
    EXPECT_EQ(t.embedding, l == 0 ? &m.tensor("embedding") : nullptr) << t.name;
    EXPECT_EQ(t.weight, &m.tensor(names[l] + ".weight"));
    EXPECT_EQ(t.bias, &m.tensor(names[l] + ".bias"));
  }
  EXPECT_EQ(m.layer_type(0), 0);
  EXPECT_EQ(m.head_type(), 3);
  const CellType& h = m.cell_type(m.head_type());
  EXPECT_EQ(h.name, "head");
  EXPECT_EQ(h.op, CellOp::kHeadLogits);
  EXPECT_EQ(h.input_dim, 4);
  EXPECT_EQ(h.outputs, 3);
  EXPECT_EQ(h.embedding, nullptr);
  EXPECT_EQ(h.weight, &m.tensor("head.weight"));
  EXPECT_EQ(h.weight->shape(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(m.leaf_type(), -1);
  EXPECT_EQ(m.internal_type(), -1);
}

TEST(ModelCreateTest, Seq2SeqCellTypes) {
  const ModelSpec spec = Spec(ModelKind::kSeq2Seq, 2);
  StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, Weights(spec));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Model& m = **r;
  ASSERT_EQ(m.cell_types().size(), 5u);
  struct Want {
    int index;
    const char* name;
    const char* embedding;
    int64_t input_dim;
  };
  for (const Want& w : {Want{m.layer_type(0), "encoder.0", "encoder.embedding", 6},
                        Want{m.layer_type(1), "encoder.1", nullptr, 4},
                        Want{m.decoder_layer_type(0), "decoder.0", "decoder.embedding", 6},
                        Want{m.decoder_layer_type(1), "decoder.1", nullptr, 4}}) {
    const CellType& t = m.cell_type(w.index);
    EXPECT_EQ(t.name, w.name);
    EXPECT_EQ(t.op, CellOp::kLstm);
    EXPECT_EQ(t.input_dim, w.input_dim) << w.name;
    EXPECT_EQ(t.outputs, 16);
    EXPECT_EQ(t.embedding, w.embedding ? &m.tensor(w.embedding) : nullptr) << w.name;
    EXPECT_EQ(t.weight, &m.tensor(std::string(w.name) + ".weight"));
  }
  EXPECT_NE(m.layer_type(0), m.decoder_layer_type(0));
  const CellType& p = m.cell_type(m.head_type());
  EXPECT_EQ(p.name, "proj");
  EXPECT_EQ(p.op, CellOp::kHeadArgmax);
  EXPECT_EQ(p.input_dim, 4);
  EXPECT_EQ(p.outputs, 13);
  EXPECT_EQ(p.embedding, nullptr);
  EXPECT_EQ(p.bias, &m.tensor("proj.bias"));
}

TEST(ModelCreateTest, TreeLstmCellTypes) {
  const ModelSpec spec = Spec(ModelKind::kTreeLstm);
  StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, Weights(spec));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Model& m = **r;
  ASSERT_EQ(m.cell_types().size(), 3u);
  const CellType& leaf = m.cell_type(m.leaf_type());
  EXPECT_EQ(leaf.name, "tree.leaf");
  EXPECT_EQ(leaf.op, CellOp::kTreeLeaf);
  EXPECT_EQ(leaf.embedding, &m.tensor("embedding"));
  EXPECT_EQ(leaf.input_dim, 6);
  EXPECT_EQ(leaf.outputs, 12);
  const CellType& in = m.cell_type(m.internal_type());
  EXPECT_EQ(in.name, "tree.internal");
  EXPECT_EQ(in.op, CellOp::kTreeInternal);
  EXPECT_EQ(in.embedding, nullptr);
  EXPECT_EQ(in.input_dim, 8);
  EXPECT_EQ(in.outputs, 20);
  EXPECT_EQ(in.weight, &m.tensor("tree.internal.weight"));
  const CellType& h = m.cell_type(m.head_type());
  EXPECT_EQ(h.name, "head");
  EXPECT_EQ(h.op, CellOp::kHeadLogits);
  EXPECT_EQ(h.outputs, 3);
  std::vector<int> idx = {m.leaf_type(), m.internal_type(), m.head_type()};
  std::sort(idx.begin(), idx.end());
  EXPECT_EQ(idx, (std::vector<int>{0, 1, 2}));
}

TEST(ModelCreateTest, KeepsTheWeightValues) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  SafetensorsFile w = Weights(spec);
  StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, w);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (const auto& [name, raw] : w.tensors) {
    const Tensor want = raw.ToFloat();
    EXPECT_EQ((*r)->tensor(name).shape(), want.shape()) << name;
    EXPECT_EQ((*r)->tensor(name).values(), want.values()) << name;
  }
}

TEST(ModelCreateTest, F16WeightsConvertToFloat) {
  ModelSpec spec = Spec(ModelKind::kTreeLstm);
  spec.dtype = "F16";
  SafetensorsFile w = Weights(spec);
  ASSERT_EQ(w.tensors.at("head.bias").dtype, DType::kF16);
  StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, w);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const RawTensor& raw = w.tensors.at("tree.leaf.weight");
  const Tensor& t = (*r)->tensor("tree.leaf.weight");
  ASSERT_EQ(t.size() * 2, static_cast<int64_t>(raw.bytes.size()));
  for (int64_t i = 0; i < t.size(); ++i) {
    const uint16_t h = static_cast<uint16_t>(raw.bytes[2 * i] | (raw.bytes[2 * i + 1] << 8));
    ASSERT_EQ(t.data()[i], HalfToFloat(h)) << i;
  }
}

TEST(ModelCreateTest, NonFiniteWeightsAreRefusedNamingTheTensor) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    SafetensorsFile w = Weights(spec);
    Tensor t = w.tensors.at("lstm.1.weight").ToFloat();
    t.values()[5] = bad;
    t.values()[9] = bad;
    w.tensors["lstm.1.weight"] = RawTensor::FromFloat(t, DType::kF32);
    StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, w);
    ASSERT_FALSE(r.ok()) << "created with " << bad;
    ExpectInvalidNaming(r.status(), "'lstm.1.weight' has 2 values that are not finite");
    ExpectInvalidNaming(r.status(), "index 5");
  }
}

TEST(ModelCreateTest, MissingTensorNamesIt) {
  for (ModelKind kind : {ModelKind::kLstm, ModelKind::kSeq2Seq, ModelKind::kTreeLstm}) {
    const ModelSpec spec = Spec(kind);
    for (const auto& [name, shape] : Model::RequiredTensors(spec)) {
      SafetensorsFile w = Weights(spec);
      w.tensors.erase(name);
      StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, w);
      ASSERT_FALSE(r.ok()) << "created without " << name;
      ExpectInvalidNaming(r.status(), "'" + name + "'");
      ExpectInvalidNaming(r.status(), "missing");
      ExpectInvalidNaming(r.status(), "check its \"kind\" and \"layers\"");  // the file is cellserve's
    }
  }
  // A PyTorch state_dict saved as is: the names it does hold, and where the layout comes from.
  SafetensorsFile raw;
  for (const char* name : {"emb.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                           "fc.weight", "fc.bias", "zz.extra"})
    raw.tensors[name] = RawTensor::FromFloat(Tensor({1}), DType::kF32);
  const Status s = Model::Create(Spec(ModelKind::kLstm), raw).status();
  ExpectInvalidNaming(s, "the file holds 'emb.weight', 'fc.bias', 'fc.weight', 'rnn.bias_hh_l0'");
  ExpectInvalidNaming(s, ", ... (a PyTorch state_dict saved as is? tools/export_pytorch.py");
  // The usual state_dict of nn.Embedding + nn.LSTM + nn.Linear named head: its head.* are names
  // of cellserve's layout too, but the rest says where the file came from.
  SafetensorsFile usual;
  for (const char* name : {"embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0",
                           "lstm.bias_hh_l0", "head.weight", "head.bias"})
    usual.tensors[name] = RawTensor::FromFloat(Tensor({1}), DType::kF32);
  ExpectInvalidNaming(Model::Create(Spec(ModelKind::kLstm), usual).status(),
                      "(a PyTorch state_dict saved as is? tools/export_pytorch.py");
}

TEST(ModelCreateTest, WrongShapeNamesTensorAndShapes) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  SafetensorsFile w = Weights(spec);
  // lstm.1 given layer 0's input width: [16, 10] instead of [16, 8].
  Tensor t({16, 10});
  w.tensors["lstm.1.weight"] = RawTensor::FromFloat(t, DType::kF32);
  StatusOr<std::shared_ptr<const Model>> r = Model::Create(spec, w);
  ASSERT_FALSE(r.ok());
  ExpectInvalidNaming(r.status(), "'lstm.1.weight'");
  ExpectInvalidNaming(r.status(), "[16, 10]");
  ExpectInvalidNaming(r.status(), "[16, 8]");

  // Transposed head and a bias of the wrong rank.
  SafetensorsFile w2 = Weights(spec);
  w2.tensors["head.weight"] = RawTensor::FromFloat(Tensor({4, 3}), DType::kF32);
  ExpectInvalidNaming(Model::Create(spec, w2).status(), "'head.weight'");
  SafetensorsFile w3 = Weights(spec);
  w3.tensors["head.bias"] = RawTensor::FromFloat(Tensor({3, 1}), DType::kF32);
  ExpectInvalidNaming(Model::Create(spec, w3).status(), "'head.bias'");
}

TEST(ModelCreateTest, WrongDtypeNamesTensor) {
  ModelSpec f16 = Spec(ModelKind::kSeq2Seq);
  f16.dtype = "F16";
  SafetensorsFile w = Weights(f16);  // stored as F16
  const ModelSpec f32 = Spec(ModelKind::kSeq2Seq);
  StatusOr<std::shared_ptr<const Model>> r = Model::Create(f32, w);
  ASSERT_FALSE(r.ok());
  ExpectInvalidNaming(r.status(), "'decoder.0.bias'");  // first tensor in name order
  ExpectInvalidNaming(r.status(), "F16");
  ExpectInvalidNaming(r.status(), "F32");

  // Only one tensor off.
  SafetensorsFile w2 = Weights(f32);
  w2.tensors["proj.bias"] = RawTensor::FromFloat(w2.tensors["proj.bias"].ToFloat(), DType::kBF16);
  ExpectInvalidNaming(Model::Create(f32, w2).status(), "'proj.bias'");
}

TEST(ModelCreateTest, InvalidSpecRejected) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  SafetensorsFile w = Weights(spec);
  spec.name = "bad name";
  EXPECT_EQ(Model::Create(spec, w).status().code(), StatusCode::kInvalidArgument);
}

TEST(ModelCreateTest, ExtraTensorsAreIgnored) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  SafetensorsFile w = Weights(spec);
  // Names no model has, even under the layout's prefixes (PyTorch's own, kept beside the export).
  for (const char* name : {"optimizer.step", "lstm.weight_ih_l0", "head.scale", "encoder.0.weight.orig", "tree.x"})
    w.tensors[name] = RawTensor::FromFloat(Tensor({1}), DType::kF32);
  EXPECT_TRUE(Model::Create(spec, w).ok()) << Model::Create(spec, w).status().ToString();
}

// A spec with fewer layers than its weights (the spec's "layers" left out: 1) matched every
// shape it asked for and loaded, answering as another model would: the layers it leaves out are
// an error naming the first of them.
TEST(ModelCreateTest, LayersTheSpecLeavesOutAreAnError) {
  for (ModelKind kind : {ModelKind::kLstm, ModelKind::kSeq2Seq}) {
    const SafetensorsFile three = Weights(Spec(kind, 3));
    const ModelSpec one = Spec(kind, 1);
    const Status s = Model::Create(one, three).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    const std::string first = kind == ModelKind::kLstm ? "'lstm.1.bias'" : "'decoder.1.bias'";
    EXPECT_NE(s.message().find("weights hold tensor " + first), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("layers 1"), std::string::npos) << s.message();
  }
  // A Tree-LSTM's weights under an lstm spec with the same embedding: the tree's tensors are named.
  ModelSpec tree = Spec(ModelKind::kTreeLstm);
  SafetensorsFile w = Weights(Spec(ModelKind::kLstm));
  w.tensors["tree.leaf.weight"] = Weights(tree).tensors.at("tree.leaf.weight");
  ExpectInvalidNaming(Model::Create(Spec(ModelKind::kLstm), w).status(), "tree.leaf.weight");
}

// ---- RandomWeights ----

TEST(RandomWeightsTest, DeterministicPerSeed) {
  for (const char* dtype : {"F32", "F16", "BF16"}) {
    ModelSpec spec = Spec(ModelKind::kSeq2Seq);
    spec.dtype = dtype;
    StatusOr<std::string> a = SerializeSafetensors(*RandomWeights(spec, 7, 0.1f));
    StatusOr<std::string> b = SerializeSafetensors(*RandomWeights(spec, 7, 0.1f));
    StatusOr<std::string> c = SerializeSafetensors(*RandomWeights(spec, 8, 0.1f));
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(*a, *b) << dtype;
    EXPECT_NE(*a, *c) << dtype;
  }
  // Different seeds differ tensor by tensor, not just in metadata.
  const ModelSpec spec = Spec(ModelKind::kLstm);
  SafetensorsFile x = *RandomWeights(spec, 1, 1.0f), y = *RandomWeights(spec, 2, 1.0f);
  for (const auto& [name, raw] : x.tensors) EXPECT_NE(raw.bytes, y.tensors.at(name).bytes) << name;
}

TEST(RandomWeightsTest, WithinScaleAndSpread) {
  const ModelSpec spec = Spec(ModelKind::kTreeLstm);
  for (float scale : {0.05f, 1.0f, 3.0f}) {
    StatusOr<SafetensorsFile> w = RandomWeights(spec, 11, scale);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w->tensors.size(), Model::RequiredTensors(spec).size());
    float lo = scale, hi = -scale;
    double sum = 0;
    int64_t n = 0;
    for (const auto& [name, raw] : w->tensors) {
      EXPECT_EQ(raw.dtype, DType::kF32);
      EXPECT_EQ(raw.shape, Model::RequiredTensors(spec).at(name));
      const Tensor t = raw.ToFloat();
      for (float v : t.values()) {
        ASSERT_GE(v, -scale) << name;
        ASSERT_LE(v, scale) << name;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        sum += v;
        ++n;
      }
    }
    EXPECT_LT(lo, -0.9f * scale);  // uses the whole range
    EXPECT_GT(hi, 0.9f * scale);
    EXPECT_LT(std::abs(sum / n), 0.1 * scale);  // centred
  }
}

TEST(RandomWeightsTest, ScaleMustBeFinitePositiveAndFitTheDtype) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  for (float scale : {0.0f, -1.0f, std::nanf(""), std::numeric_limits<float>::infinity()})
    ExpectInvalidNaming(RandomWeights(spec, 1, scale).status(), "init scale");
  spec.dtype = "F16";
  ExpectInvalidNaming(RandomWeights(spec, 1, 1e6f).status(), "F16");
  EXPECT_TRUE(RandomWeights(spec, 1, 60000.0f).ok());
  spec.dtype = "BF16";
  EXPECT_TRUE(RandomWeights(spec, 1, 1e6f).ok());
  EXPECT_TRUE(RandomWeights(spec, 1, 3.38e38f).ok());
  ExpectInvalidNaming(RandomWeights(spec, 1, 3.4e38f).status(), "BF16");  // rounds to infinity there
}

TEST(RandomWeightsTest, InvalidSpecRejected) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.hidden = 0;
  EXPECT_EQ(RandomWeights(spec, 1, 1.0f).status().code(), StatusCode::kInvalidArgument);
}

// ---- repository on disk ----

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "repo_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    repo_ = tmpl;
  }
  void TearDown() override { fs::remove_all(repo_); }
  std::string repo_;
};

TEST_F(RepositoryTest, WriteLoadRoundTrip) {
  ModelSpec a = Spec(ModelKind::kSeq2Seq);
  a.name = "b-model";
  a.dtype = "BF16";
  ModelSpec b = Spec(ModelKind::kTreeLstm);
  b.name = "a_model";
  const SafetensorsFile wa = Weights(a, 1), wb = Weights(b, 2);
  ASSERT_TRUE(WriteModel(repo_, a, wa).ok());
  ASSERT_TRUE(WriteModel(repo_, b, wb).ok());
  EXPECT_TRUE(fs::is_regular_file(repo_ + "/b-model/spec.json"));
  EXPECT_TRUE(fs::is_regular_file(repo_ + "/b-model/weights.safetensors"));
  for (const auto& entry : fs::directory_iterator(repo_ + "/b-model"))  // no temporary left
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  // Not models: a folder without spec.json and a plain file.
  fs::create_directories(repo_ + "/empty_dir");
  std::ofstream(repo_ + "/README") << "hi";

  StatusOr<std::vector<std::string>> names = ListModels(repo_);
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{"a_model", "b-model"}));

  StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, "b-model");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const ModelSpec& s = (*m)->spec();
  EXPECT_EQ(s.name, "b-model");
  EXPECT_EQ(s.kind, ModelKind::kSeq2Seq);
  EXPECT_EQ(s.target_vocab_size, a.target_vocab_size);
  EXPECT_EQ(s.max_batch, a.max_batch);
  EXPECT_EQ(s.dtype, "BF16");
  EXPECT_EQ(ModelSpecToJson(s), ModelSpecToJson(a));
  for (const auto& [name, raw] : wa.tensors)
    EXPECT_EQ((*m)->tensor(name).values(), raw.ToFloat().values()) << name;

  StatusOr<std::shared_ptr<const Model>> m2 = Model::Load(repo_ + "/a_model");
  ASSERT_TRUE(m2.ok()) << m2.status().ToString();
  EXPECT_EQ((*m2)->spec().kind, ModelKind::kTreeLstm);
  EXPECT_EQ((*m2)->tensor("tree.internal.weight").values(),
            wb.tensors.at("tree.internal.weight").ToFloat().values());
}

// A 16-bit model whose weights as floats do not fit what is left once its file is read: refused
// up front (under a cgroup limit the conversion would not fail, the OOM killer would come).
TEST_F(RepositoryTest, WeightsThatDoNotFitAsFloatsAreRefusedBeforeConverting) {
  CELLSERVE_SKIP_UNDER_ASAN("it limits the address space");
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.name = "wide";
  spec.dtype = "F16";
  spec.vocab_size = 20000;  // the embedding: 20000 x 1000 x 2 bytes, 38 MiB of the file
  spec.embed_dim = 1000;
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec, 1)).ok());
  const std::string dir = repo_ + "/wide";
  // In a child: 100 MiB to spare. Reading passes its check (twice the file), but then the file's
  // tensors are held and floats twice their size do not fit beside them.
  auto child = [&dir] {
    if (!testutil::LimitAddressSpaceTo(int64_t{100} << 20)) std::_Exit(3);
    StatusOr<std::shared_ptr<const Model>> m = Model::Load(dir);
    const std::string message = m.ok() ? "loaded" : m.status().message();
    const bool checked = message.find("its weights as floats take") != std::string::npos &&
                         message.find("may still take") != std::string::npos;
    if (!checked) std::fprintf(stderr, "got: %s\n", message.c_str());
    std::error_code ec;  // the child (threadsafe style: a new process) made its own repository
    fs::remove_all(fs::path(dir).parent_path(), ec);
    std::_Exit(!m.ok() && m.status().code() == StatusCode::kResourceExhausted && checked ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
  EXPECT_TRUE(Model::Load(dir).ok()) << "it loads where there is room";
}

// A spec whose sizes would take terabytes over a small file: the answer is that the spec does not
// describe the file, not that memory is short.
TEST_F(RepositoryTest, ASpecThatDoesNotDescribeItsWeightsIsSaidSoBeforeMemoryIsSized) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.name = "m";
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  spec.vocab_size = int64_t{1} << 24;
  spec.embed_dim = 65536;
  ASSERT_TRUE(WriteFileAtomically(repo_ + "/m/spec.json", ModelSpecToJson(spec)).ok());
  const Status s = Model::Load(repo_ + "/m").status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("tensor 'embedding' has shape"), std::string::npos) << s.message();
}

TEST_F(RepositoryTest, WriteOverwritesAModel) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec, 1)).ok());
  const SafetensorsFile w2 = Weights(spec, 2);
  ASSERT_TRUE(WriteModel(repo_, spec, w2).ok());
  StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, spec.name);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->tensor("embedding").values(), w2.tensors.at("embedding").ToFloat().values());
}

TEST_F(RepositoryTest, UnknownModelListsAvailable) {
  ModelSpec a = Spec(ModelKind::kLstm);
  a.name = "alpha";
  ModelSpec b = Spec(ModelKind::kLstm);
  b.name = "beta";
  ASSERT_TRUE(WriteModel(repo_, a, Weights(a)).ok());
  ASSERT_TRUE(WriteModel(repo_, b, Weights(b)).ok());
  StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, "gamma");
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("'gamma'"), std::string::npos) << m.status().ToString();
  EXPECT_NE(m.status().message().find("alpha, beta"), std::string::npos) << m.status().ToString();
}

TEST_F(RepositoryTest, EmptyRepository) {
  StatusOr<std::vector<std::string>> names = ListModels(repo_);
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names->empty());
  StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, "x");
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("no models"), std::string::npos) << m.status().ToString();
}

TEST_F(RepositoryTest, MissingRepositoryIsNotFound) {
  const std::string missing = repo_ + "/does/not/exist";
  StatusOr<std::vector<std::string>> names = ListModels(missing);
  EXPECT_EQ(names.status().code(), StatusCode::kNotFound);
  EXPECT_NE(names.status().message().find(missing), std::string::npos);
  EXPECT_EQ(LoadModel(missing, "x").status().code(), StatusCode::kNotFound);
  // A file is not a repository either.
  std::ofstream(repo_ + "/file") << "x";
  EXPECT_EQ(ListModels(repo_ + "/file").status().code(), StatusCode::kNotFound);
}

// A repository this process may not list is an error, not an empty repository (which would
// send a server up with no models and a misleading NOT_FOUND per request). Tests run as root,
// which reads anything: as root, a thread of its own lists it with its filesystem uid set to
// nobody's (setfsuid is per thread and drops root's permission override with it).
TEST_F(RepositoryTest, AnUnreadableRepositoryIsAnErrorNotAnEmptyOne) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.name = "m";
  const std::string locked = repo_ + "/locked";
  ASSERT_TRUE(WriteModel(locked, spec, Weights(spec)).ok());
  using fs::perms;
  fs::permissions(repo_, perms::owner_all | perms::group_exec | perms::others_exec);
  // Searchable, not readable: its entries cannot be listed.
  fs::permissions(locked, perms::owner_write | perms::owner_exec | perms::group_exec | perms::others_exec);
  StatusOr<std::vector<std::string>> names = Status(Internal("not run"));
  bool as_another_user = true;
  if (geteuid() == 0) {
    std::thread lister([&] {
      setfsuid(65534);
      if (setfsuid(static_cast<uid_t>(-1)) != 65534) {
        as_another_user = false;
        return;
      }
      names = ListModels(locked);
    });
    lister.join();
  } else {
    names = ListModels(locked);
  }
  fs::permissions(locked, perms::owner_all);  // for TearDown
  if (!as_another_user) GTEST_SKIP() << "this process cannot set a thread's filesystem uid";
  ASSERT_FALSE(names.ok()) << "an unreadable repository was listed, with " << names->size() << " models";
  EXPECT_EQ(names.status().code(), StatusCode::kUnavailable) << names.status().ToString();
  EXPECT_NE(names.status().message().find("cannot read the model repository '" + locked + "'"), std::string::npos)
      << names.status().message();
  EXPECT_NE(names.status().message().find("ermission denied"), std::string::npos) << names.status().message();
}

// A model folder the server cannot look into was skipped: the server started without the model
// and answered it NOT_FOUND. Now it says which folder and why; lost+found (root's, on a volume) is
// still skipped.
TEST_F(RepositoryTest, AModelFolderThatCannotBeReadIsAnErrorButLostAndFoundIsSkipped) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to read as another user";
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.name = "m";
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  using fs::perms;
  // Readable by all (the other user keeps root's group: the group bits apply to it).
  const perms readable = perms::owner_all | perms::group_read | perms::group_exec | perms::others_read |
                         perms::others_exec;
  fs::permissions(repo_, readable);
  fs::permissions(repo_ + "/m", readable);
  fs::create_directories(repo_ + "/lost+found");
  fs::permissions(repo_ + "/lost+found", perms::owner_all);
  fs::create_directories(repo_ + "/locked");
  fs::permissions(repo_ + "/locked", perms::owner_all);
  // As user 65534, on a thread of its own.
  auto as_another_user = [&](auto call) -> std::optional<decltype(call())> {
    std::optional<decltype(call())> result;
    std::thread caller([&] {
      setfsuid(65534);
      if (setfsuid(static_cast<uid_t>(-1)) == 65534) result = call();
    });
    caller.join();
    return result;
  };
  auto list_as_another_user = [&] { return as_another_user([&] { return ListModels(repo_); }); };
  auto locked = list_as_another_user();
  if (!locked) GTEST_SKIP() << "this process cannot set a thread's filesystem uid";
  ASSERT_FALSE(locked->ok()) << "listed " << (*locked)->size() << " models past an unreadable folder";
  EXPECT_EQ(locked->status().code(), StatusCode::kUnavailable);
  EXPECT_NE(locked->status().message().find("'" + repo_ + "/locked'"), std::string::npos) << locked->status().message();
  EXPECT_NE(locked->status().message().find("ermission denied"), std::string::npos) << locked->status().message();
  // A model named on its own loads whatever its sibling folders are; named, the locked one says
  // why it cannot (it said "no spec.json").
  auto loaded = as_another_user([&] { return LoadModel(repo_, "m").status(); });
  ASSERT_TRUE(loaded.has_value());
  EXPECT_TRUE(loaded->ok()) << loaded->ToString();
  auto named = as_another_user([&] { return LoadModel(repo_, "locked").status(); });
  ASSERT_TRUE(named.has_value());
  EXPECT_EQ(named->code(), StatusCode::kUnavailable) << named->ToString();
  EXPECT_NE(named->message().find("ermission denied"), std::string::npos) << named->message();
  // A link to a model folder the server cannot reach is named too (it was skipped).
  fs::rename(repo_ + "/locked", repo_ + "/.hidden_locked");
  fs::create_directories(repo_ + "/.hidden_locked/m2");
  fs::create_directory_symlink(repo_ + "/.hidden_locked/m2", repo_ + "/linked");
  auto linked = list_as_another_user();
  ASSERT_TRUE(linked.has_value());
  EXPECT_EQ(linked->status().code(), StatusCode::kUnavailable) << linked->status().ToString();
  EXPECT_NE(linked->status().message().find("'" + repo_ + "/linked'"), std::string::npos) << linked->status().message();
  fs::remove(repo_ + "/linked");
  auto names = list_as_another_user();
  ASSERT_TRUE(names && names->ok()) << (names ? names->status().ToString() : "");
  EXPECT_EQ(**names, std::vector<std::string>{"m"}) << "lost+found is not a model";
}

// Triton's layout (NAME/VERSION/spec.json) was skipped in silence: a repository copied from
// Triton served none of its models.
TEST_F(RepositoryTest, ATritonStyleVersionFolderSaysHowToLayTheModelOut) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.name = "m";
  ASSERT_TRUE(WriteModel(repo_ + "/m", spec, Weights(spec)).ok());
  fs::rename(repo_ + "/m/m", repo_ + "/m/1");
  const Status s = ListModels(repo_).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("holds a version folder ('1/spec.json')"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("move m/1/* up into m/"), std::string::npos) << s.message();
  const Status named = LoadModel(repo_, "m").status();  // the same advice, not "no spec.json"
  EXPECT_EQ(named.code(), StatusCode::kInvalidArgument) << named.ToString();
  EXPECT_NE(named.message().find("move m/1/* up into m/"), std::string::npos) << named.message();
  // A folder without spec.json and without version folders is still just not a model.
  fs::remove_all(repo_ + "/m");
  fs::create_directories(repo_ + "/notes/drafts");
  EXPECT_TRUE(ListModels(repo_).ok());
}

TEST_F(RepositoryTest, WriteValidatesFirst) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  SafetensorsFile w = Weights(spec);
  w.tensors.erase("head.bias");
  Status s = WriteModel(repo_, spec, w);
  ExpectInvalidNaming(s, "'head.bias'");
  EXPECT_FALSE(fs::exists(repo_ + "/" + spec.name));  // nothing half-written
}

TEST_F(RepositoryTest, DotNamesCannotEscapeTheRepository) {
  const std::string repo = repo_ + "/inner";
  for (const char* name : {".", ".."}) {
    ModelSpec spec = Spec(ModelKind::kLstm);
    spec.name = "ok";
    SafetensorsFile w = Weights(spec);
    spec.name = name;
    Status s = WriteModel(repo, spec, w);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << name << ": " << s.ToString();
  }
  EXPECT_FALSE(fs::exists(repo_ + "/spec.json")) << "'..' wrote into the repository's parent";
  EXPECT_FALSE(fs::exists(repo + "/spec.json")) << "'.' wrote into the repository root";
}

TEST_F(RepositoryTest, OddEntriesDoNotBreakListing) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.name = "real";
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  // A symlink loop, a dangling symlink (a model's link to a volume not mounted) and a symlink to a
  // model: errors are values here, never exceptions. The links that lead nowhere may be models:
  // listing every model says so, naming one; a model named on its own loads all the same.
  fs::create_symlink("loop", repo_ + "/loop");
  fs::create_symlink(repo_ + "/missing", repo_ + "/dangling");
  fs::create_directory_symlink(repo_ + "/real", repo_ + "/alias");
  for (const char* broken : {"dangling", "loop"}) {
    StatusOr<std::vector<std::string>> names = Status(Internal("not run"));
    try {
      names = ListModels(repo_);
    } catch (const std::exception& e) {
      FAIL() << "ListModels threw: " << e.what();
    }
    EXPECT_EQ(names.status().code(), StatusCode::kUnavailable) << names.status().ToString();
    EXPECT_NE(names.status().message().find("is a link that leads nowhere"), std::string::npos)
        << names.status().message();
    const Status own = LoadModel(repo_, broken).status();
    EXPECT_EQ(own.code(), StatusCode::kUnavailable) << own.ToString();
    EXPECT_NE(own.message().find("'" + repo_ + "/" + broken + "' is a link that leads nowhere"), std::string::npos)
        << own.message();
    EXPECT_TRUE(LoadModel(repo_, "real").ok()) << "a broken sibling stopped a model named on its own";
    fs::remove(repo_ + "/" + broken);
  }
  StatusOr<std::vector<std::string>> names = ListModels(repo_);
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{"alias", "real"}));
  try {
    StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, "real");
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(LoadModel(repo_, "nothing").status().code(), StatusCode::kNotFound);
    // The alias names the same model 'real': a second name for it is refused, saying why.
    const Status alias = LoadModel(repo_, "alias").status();
    EXPECT_EQ(alias.code(), StatusCode::kInvalidArgument) << alias.ToString();
    EXPECT_NE(alias.message().find("rename the folder to 'real'"), std::string::npos) << alias.message();
  } catch (const std::exception& e) {
    FAIL() << "LoadModel threw: " << e.what();
  }
}

// A backup copy of a folder (cp -r cls cls-old) holds model 'cls' under another name: loading it
// says which folder and what to do (LocalCluster used to say "model 'cls' is listed twice"). A
// folder without spec.json is not a model, and its NOT_FOUND says what is missing.
TEST_F(RepositoryTest, AFolderMustCarryItsModelsName) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  spec.name = "cls";
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  fs::copy(repo_ + "/cls", repo_ + "/cls-old", fs::copy_options::recursive);
  EXPECT_TRUE(LoadModel(repo_, "cls").ok());
  const Status copy = LoadModel(repo_, "cls-old").status();
  EXPECT_EQ(copy.code(), StatusCode::kInvalidArgument) << copy.ToString();
  EXPECT_NE(copy.message().find("folder '" + repo_ + "/cls-old' holds model 'cls'"), std::string::npos)
      << copy.message();
  EXPECT_NE(copy.message().find("rename the folder to 'cls', or move it out of the repository"), std::string::npos)
      << copy.message();

  fs::create_directory(repo_ + "/weights-only");
  const Status bare = LoadModel(repo_, "weights-only").status();
  EXPECT_EQ(bare.code(), StatusCode::kNotFound) << bare.ToString();
  EXPECT_NE(bare.message().find("its folder is there but has no spec.json"), std::string::npos) << bare.message();
  EXPECT_EQ(LoadModel(repo_, "nope").status().message().find("folder is there"), std::string::npos);
}

// Each file is written whole under a temporary name and renamed: nothing else is left in the folder.
TEST_F(RepositoryTest, WritingLeavesOnlyTheModelsFiles) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec, i)).ok());  // the second over the first
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(repo_ + "/" + spec.name)) files.push_back(entry.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"spec.json", "weights.safetensors"}));
  EXPECT_EQ(fs::file_size(repo_ + "/" + spec.name + "/spec.json"), ModelSpecToJson(spec).size());
}

TEST_F(RepositoryTest, TruncatedWeightsFileIsAClearError) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  const std::string path = repo_ + "/" + spec.name + "/weights.safetensors";
  const auto full = fs::file_size(path);
  ASSERT_GT(full, 100u);
  for (uintmax_t size : {full - 1, full / 2, uintmax_t{20}, uintmax_t{7}, uintmax_t{0}}) {
    fs::resize_file(path, size);
    StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, spec.name);
    ASSERT_FALSE(m.ok()) << "loaded a weights file cut to " << size << " bytes";
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << m.status().ToString();
    EXPECT_NE(m.status().message().find("weights.safetensors"), std::string::npos)
        << m.status().ToString();
  }
}

TEST_F(RepositoryTest, WeightsForAnotherSpecNameTheFileAndTensor) {
  ModelSpec spec = Spec(ModelKind::kLstm);
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  // Someone edits spec.json: hidden 4 -> 8. The weights no longer fit.
  spec.hidden = 8;
  std::ofstream(repo_ + "/" + spec.name + "/spec.json", std::ios::trunc) << ModelSpecToJson(spec);
  StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, spec.name);
  ASSERT_FALSE(m.ok());
  ExpectInvalidNaming(m.status(), "weights.safetensors");
  ExpectInvalidNaming(m.status(), "shape");
}

TEST_F(RepositoryTest, MissingWeightsFileIsNotFound) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  fs::remove(repo_ + "/" + spec.name + "/weights.safetensors");
  StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, spec.name);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("weights.safetensors"), std::string::npos);
}

TEST_F(RepositoryTest, CorruptSpecIsInvalid) {
  const ModelSpec spec = Spec(ModelKind::kLstm);
  ASSERT_TRUE(WriteModel(repo_, spec, Weights(spec)).ok());
  std::ofstream(repo_ + "/" + spec.name + "/spec.json", std::ios::trunc) << "{\"name\": ";
  StatusOr<std::shared_ptr<const Model>> m = LoadModel(repo_, spec.name);
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("spec.json"), std::string::npos) << m.status().ToString();
}

}  // namespace
}  // namespace cellserve
