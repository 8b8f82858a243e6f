/**
 * The JSON shapes served by roar_nb/server (the same contract as `roar dag --json`
 * and `roar show --json`, plus a few display keys). Types only: no behaviour.
 */

export interface IEdgeJson {
  path: string;
  hash: string | null;
  size: number;
  changed: boolean;
  note: string | null;
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
  session: string;
  inputs: IEdgeJson[];
  outputs: IEdgeJson[];
  depends_on: string[];
  stale: string | null;
  superseded: boolean;
  /** `@N` + first line of source or command (server side, dag.label). */
  label?: string;
  /** The notebook path relative to the server root, when it is inside it. */
  notebook_path?: string | null;
}

export interface ISessionInfo {
  id: string;
  kind: string;
  name: string | null;
  notebook: string | null;
  notebook_path: string | null;
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
  sessions?: (ISessionInfo & { created_at: number; jobs: number; last_job_at: number | null })[];
  current?: string | null;
  active?: string | null;
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
}
