/**
 * The JSON shapes served by roar_nb/server (the same contract as `roar dag --json`
 * and `roar show --json`, plus a few display keys). Types only: no behaviour.
 *
 * The contract is roar_nb/shapes.schema.json (built by roar_nb/shapes.py):
 * test/schema.test.mjs checks that each interface here declares exactly the
 * properties of its schema definition, optional exactly where the schema does not
 * require them. Change the three together.
 */

export interface IEdgeJson {
  path: string;
  hash: string | null;
  size: number;
  changed: boolean;
  note: string | null;
}

export interface IGitJson {
  commit: string | null;
  branch: string | null;
  dirty: boolean | null;
  root: string | null;
}

export interface IJobJson {
  id: string;
  ref: string;
  seq: number;
  step: string;
  kind: string;
  command: string;
  source: string | null;
  cwd: string;
  exit_code: number | null;
  status: string;
  started_at: number;
  ended_at: number;
  duration: number;
  backend: string;
  capture_level: string;
  capture_notes: string[];
  notebook: string | null;
  cell_id: string | null;
  execution_count: number | null;
  git: IGitJson;
  session: string;
  /** The job whose command started this one (a Ray task's driver, a nested `roar run`). */
  parent_job: string | null;
  inputs: IEdgeJson[];
  outputs: IEdgeJson[];
  depends_on: string[];
  stale: string | null;
  superseded: boolean;
  /** `@N` + first line of source or command (server side, dag.label). */
  label?: string;
  /** The notebook path relative to the server root, when it is inside it. */
  notebook_path?: string | null;
  /** `roar show @N --json` only. */
  reproductions?: IReproductionJson[];
}

export interface ISessionInfo {
  id: string;
  kind: string;
  name: string | null;
  notebook: string | null;
  notebook_path: string | null;
}

export interface ISessionItem extends ISessionInfo {
  created_at: number;
  jobs: number;
  last_job_at: number | null;
}

export interface IDagDoc {
  project: string | null;
  hint?: string | null;
  session?: string | null;
  session_info?: ISessionInfo | null;
  scope?: string;
  dag_hash?: string;
  token?: string;
  jobs?: IJobJson[];
}

export interface ISessionsDoc {
  project: string | null;
  hint?: string;
  sessions?: ISessionItem[];
  current?: string | null;
  active?: string | null;
}

export interface IChangesDoc {
  project: string | null;
  hint?: string;
  token?: string;
}

export interface IArtifactRef {
  job: string;
  ref: string;
  session: string;
  path: string;
  command: string;
}

export interface IArtifactDoc {
  hash: string;
  size: number | null;
  digests: Record<string, string>;
  paths: string[];
  producers: IArtifactRef[];
  consumers: IArtifactRef[];
  /** `roar show HASH --json` only. */
  reproductions?: IReproductionJson[];
}

export interface IVerdictJson {
  path: string;
  expected: string | null;
  actual: string | null;
  verdict: string;
  job: string | null;
  target: boolean;
}

export interface IReproductionJson {
  id: string;
  created_at: number;
  target: string;
  mode: string;
  ok: boolean;
  directory: string | null;
  target_hashes: string[];
  plan: string[];
  verdicts: IVerdictJson[];
}

export interface IErrorJson {
  error: { message: string; status: number };
}
