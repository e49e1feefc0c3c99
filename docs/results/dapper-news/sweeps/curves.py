"""Per-epoch held-out curves of DAPPER: python curves.py CORPUS BATCH EPOCHS SEED JSON_OVERRIDES OUT"""
import json, sys, time
import jax, numpy as np
from flowjax_thesis.models.dap import DapConfig, split_by_author
from flowjax_thesis.models.dap import evaluation as ev
from flowjax_thesis.models.dap.training import fit_dapper

corpus_name, bs, epochs, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
extra = json.loads(sys.argv[5]); out = sys.argv[6]
bs = None if bs == "full" else int(bs)
if corpus_name == "news":
    from flowjax_thesis.models.dap.news import news_articles_corpus
    corpus = news_articles_corpus(vocab_size=10000)
else:
    from flowjax_thesis.data.sotu import sotu_corpus
    corpus = sotu_corpus(unit="block", block_words=int(extra.pop("block", 50)), vocab_size=5000)
train, test = split_by_author(corpus, 0.1, seed=seed)
kw = dict(num_topics=25, num_personas=15); kw.update(extra)
cfg = DapConfig(**kw)
print(corpus_name, train.num_docs, test.num_docs, cfg, flush=True)
rows = []
def usage(state):
    probs = ev.author_persona_probs(state)
    dom = probs.argmax(1)
    mass = probs.sum(0) / probs.shape[0]
    return {"conc": float(np.mean(probs.max(1) > 0.9)), "dominant_personas": int(len(set(dom.tolist()))),
            "personas_gt_5pct": int((mass > 0.05).sum()), "largest_dominant_share": float(np.bincount(dom).max() / len(dom))}
def eval_fn(state):
    r = {"pwll": ev.completion_pwll(cfg, state, test, train=train, seed=seed)["pwll"], **usage(state),
         "alpha_mean_abs": float(np.abs(np.asarray(state.alpha).mean(-1)).mean())}
    print(json.dumps(r), flush=True); rows.append(r); return r
t0 = time.time()
res = fit_dapper(train, cfg, key=jax.random.PRNGKey(seed), epochs=epochs, batch_size=bs, eval_fn=eval_fn)
secs = time.time() - t0
final = {"heldout_thesis": ev.heldout_pwll(cfg, res.state, test, seed=seed)["pwll"]}
print(json.dumps(final), "secs", secs, flush=True)
json.dump({"corpus": corpus_name, "batch": bs, "seed": seed, "config": str(cfg), "epochs": rows, **final, "seconds": secs}, open(out, "w"))
