import sys, time, json, dataclasses
import numpy as np, jax
from flowjax_thesis.models.dap import DapConfig, fit_dapper, split_by_author
from flowjax_thesis.models.dap import evaluation as ev
corpus_name = sys.argv[1]; bs = None if sys.argv[2]=="full" else int(sys.argv[2]); epochs=int(sys.argv[3])
extra = json.loads(sys.argv[4]) if len(sys.argv)>4 else {}
if corpus_name == "news":
    from flowjax_thesis.models.dap.news import news_articles_corpus
    corpus = news_articles_corpus(vocab_size=10000)
else:
    from flowjax_thesis.data.sotu import sotu_corpus
    corpus = sotu_corpus(unit="block", block_words=int(extra.pop("block", 50)), vocab_size=5000)
train, test = split_by_author(corpus, 0.1, seed=0)
print(corpus_name, corpus.num_docs, train.num_docs, test.num_docs, train.num_tokens, corpus.num_times, corpus.num_authors, flush=True)
kw = dict(num_topics=25, num_personas=15, rho_reg=0.2, doc_variance=1.0, local_max_iter=30)
kw.update(extra)
cfg = DapConfig(**kw)
print(cfg, flush=True)
def eval_fn(state):
    out = {"pwll": ev.completion_pwll(cfg, state, test, train=train, seed=0)["pwll"]}
    out["alpha_norm"] = float(np.abs(np.asarray(state.alpha)).mean())
    out["lam_sum"] = float(np.asarray(state.lam).sum())
    out["conc"] = ev.share_concentrated(state)
    print(json.dumps(out), flush=True)
    return out
t0=time.time()
res = fit_dapper(train, cfg, key=jax.random.PRNGKey(0), epochs=epochs, batch_size=bs, eval_fn=eval_fn)
el = [r["train_elbo_docs_per_word"] for r in res.history]
print("train elbo per step (first, every 10th):", [round(x,3) for x in el[::max(1,len(el)//20)]])
print("thesis pwll", ev.thesis_pwll(cfg, res.state, test))
print("secs", time.time()-t0)
